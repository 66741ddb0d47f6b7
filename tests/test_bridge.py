"""The event-loop bridge: lazy start, call(), timeouts, refusals, stop(), fork."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from membersense.bridge import Bridge, BridgeClosed, BridgeForked


def _threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


@pytest.fixture
def bridge():
    made = Bridge(name="test-bridge")
    yield made
    made.stop()


async def _add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def test_nothing_starts_before_the_first_call(bridge: Bridge) -> None:
    assert not bridge.running
    assert _threads_named("test-bridge") == []
    assert bridge.call(_add, 2, 3, timeout=5) == 5
    assert bridge.running
    [thread] = _threads_named("test-bridge")
    assert thread.daemon


def test_calls_run_on_one_loop_thread(bridge: Bridge) -> None:
    async def where() -> tuple[int, int]:
        return threading.get_ident(), id(asyncio.get_running_loop())

    first = bridge.call(where, timeout=5)
    second = bridge.call(where, timeout=5)
    assert first == second
    assert first[0] != threading.get_ident()


def test_exceptions_propagate_with_their_type(bridge: Bridge) -> None:
    class Boom(Exception):
        pass

    async def fail() -> None:
        raise Boom("on the loop")

    with pytest.raises(Boom):
        bridge.call(fail, timeout=5)


def test_timeout_cancels_the_coroutine(bridge: Bridge) -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        bridge.call(slow, timeout=0.2)
    assert time.monotonic() - started < 2
    assert cancelled.wait(5), "the coroutine kept running after the caller gave up"


def test_refuses_to_run_from_the_loop_thread(bridge: Bridge) -> None:
    created: list[str] = []

    async def inner() -> None:
        created.append("inner coroutine ran")

    async def reenter() -> str:
        try:
            bridge.call(inner, timeout=1)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    message = bridge.call(reenter, timeout=5)
    assert "own loop thread" in message
    assert created == []  # refused before the coroutine was even created


def test_stop_runs_hooks_cancels_leftovers_and_joins(bridge: Bridge) -> None:
    events: list[str] = []
    leftover_cancelled = threading.Event()

    async def hook() -> None:
        events.append("hook")

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            leftover_cancelled.set()
            raise

    async def spawn() -> None:
        asyncio.get_running_loop().create_task(forever())

    bridge.add_stop_hook(hook)
    bridge.call(spawn, timeout=5)
    [thread] = _threads_named("test-bridge")
    bridge.stop()
    assert events == ["hook"]
    assert leftover_cancelled.is_set()
    assert not thread.is_alive()
    assert not bridge.running


def test_stop_is_idempotent_and_final(bridge: Bridge) -> None:
    bridge.call(_add, 1, 1, timeout=5)
    bridge.stop()
    bridge.stop()
    with pytest.raises(BridgeClosed):
        bridge.call(_add, 1, 1, timeout=5)
    assert _threads_named("test-bridge") == []


def test_stop_without_start_starts_nothing() -> None:
    bridge = Bridge(name="never-started")
    bridge.stop()
    with pytest.raises(BridgeClosed):
        bridge.call(_add, 1, 1, timeout=5)
    assert _threads_named("never-started") == []


def test_a_call_in_flight_when_stopping_ends_with_bridge_closed(bridge: Bridge) -> None:
    started = threading.Event()
    outcome: list[BaseException] = []

    async def wait_forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    def caller() -> None:
        try:
            bridge.call(wait_forever, timeout=30)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(5)
    bridge.stop()
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], BridgeClosed)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
# Python 3.12+ warns on fork() with threads running, which is this test's very point.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_refuses_the_parents_loop(bridge: Bridge) -> None:
    bridge.call(_add, 1, 1, timeout=5)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must refuse, and stop() must not hang
        code = 1
        try:
            bridge.call(_add, 1, 1, timeout=1)
        except BridgeForked:
            code = 0
        except BaseException:
            code = 2
        bridge.stop()
        os.write(write_end, bytes([code]))
        os._exit(0)
    os.close(write_end)
    try:
        answer = os.read(read_end, 1)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert answer == bytes([0])
    assert bridge.call(_add, 2, 2, timeout=5) == 4  # the parent's loop is untouched
