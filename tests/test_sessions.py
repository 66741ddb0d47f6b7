"""The session registry: limits, activity, idle expiry, the sweeper, shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from membersense.errors import ServiceUnavailable, Unauthorized
from membersense.sessions import ID_LENGTH, SessionRegistry, fingerprint
from tests.fakes import FakeClock
from tests.fakes import FakeConnector


_registries: list[SessionRegistry] = []


def make_registry(clock: FakeClock, *, max_sessions: int = 3, idle: float = 60.0,
                  interval: float = 3600.0) -> SessionRegistry:
    registry = SessionRegistry(max_sessions=max_sessions, idle_timeout=idle,
                               cleanup_interval=interval, clock=clock)
    _registries.append(registry)
    return registry


@pytest.fixture(autouse=True)
def _close_registries() -> object:
    yield
    while _registries:
        _registries.pop().close_all()


def test_open_registers_a_session_with_a_nanoid_and_a_token_fingerprint(clock: FakeClock) -> None:
    registry = make_registry(clock)
    session = registry.open("good-token", FakeConnector().connect)
    assert len(session.id) == ID_LENGTH
    assert registry.get(session.id) is session
    assert session.token_fingerprint == fingerprint("good-token")
    assert "good-token" not in repr(session)
    registry.close_all()


def test_ids_are_unique(clock: FakeClock) -> None:
    registry = make_registry(clock, max_sessions=200)
    connector = FakeConnector()
    ids = {registry.open("good-token", connector.connect).id for _ in range(200)}
    assert len(ids) == 200
    registry.close_all()


def test_a_failed_login_gives_its_slot_back(clock: FakeClock) -> None:
    registry = make_registry(clock, max_sessions=1)
    connector = FakeConnector()
    with pytest.raises(Unauthorized):
        registry.open("wrong", connector.connect)
    assert len(registry) == 0
    registry.open("good-token", connector.connect)
    assert len(registry) == 1
    registry.close_all()


def test_the_limit_counts_logins_still_under_way(clock: FakeClock) -> None:
    registry = make_registry(clock, max_sessions=1)
    connector = FakeConnector()
    connector.gate = threading.Event()
    results: list[object] = []
    slow = threading.Thread(target=lambda: results.append(
        registry.open("good-token", connector.connect)))
    slow.start()
    deadline = time.monotonic() + 5
    while registry._pending == 0 and time.monotonic() < deadline:  # login has its slot
        time.sleep(0.001)
    with pytest.raises(ServiceUnavailable) as excinfo:
        registry.open("good-token", connector.connect)
    assert excinfo.value.description == "Maximum number of concurrent users reached"
    connector.gate.set()
    slow.join(5)
    assert len(results) == 1 and len(registry) == 1
    registry.close_all()


def test_activity_refreshes_and_idle_sessions_expire_lazily(clock: FakeClock) -> None:
    registry = make_registry(clock, idle=60)
    session = registry.open("good-token", FakeConnector().connect)
    clock.advance(50)
    assert registry.get(session.id) is session  # refreshed at t+50
    clock.advance(50)
    assert registry.get(session.id) is session  # 50 s idle: still alive
    clock.advance(61)
    assert registry.get(session.id) is None
    assert session.service.closed  # type: ignore[attr-defined]
    assert len(registry) == 0


def test_expire_idle_closes_only_stale_sessions(clock: FakeClock) -> None:
    registry = make_registry(clock, idle=60)
    connector = FakeConnector()
    old = registry.open("good-token", connector.connect)
    clock.advance(40)
    fresh = registry.open("good-token", connector.connect)
    clock.advance(30)
    assert registry.expire_idle() == 1
    assert old.service.closed and not fresh.service.closed  # type: ignore[attr-defined]
    assert registry.get(fresh.id) is fresh
    registry.close_all()


def test_the_sweeper_thread_expires_sessions_every_interval(clock: FakeClock) -> None:
    registry = make_registry(clock, idle=60, interval=0.01)
    session = registry.open("good-token", FakeConnector().connect)
    sweeper = registry._sweeper
    assert sweeper is not None and sweeper.is_alive(), "the first session starts the sweeper"
    assert sweeper.name == "membersense-session-sweeper" and sweeper.daemon
    clock.advance(61)
    deadline = time.monotonic() + 5
    while len(registry) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(registry) == 0 and session.service.closed  # type: ignore[attr-defined]
    registry.close_all()
    assert not sweeper.is_alive(), "close_all stops the sweeper"


def test_no_sweeper_before_the_first_session(clock: FakeClock) -> None:
    before = {t.ident for t in threading.enumerate()}
    make_registry(clock, interval=0.01)
    after = {t.ident for t in threading.enumerate()}
    assert after == before


def test_close_is_idempotent_and_closes_the_service(clock: FakeClock) -> None:
    registry = make_registry(clock)
    session = registry.open("good-token", FakeConnector().connect)
    assert registry.close(session.id) is True
    assert registry.close(session.id) is False
    assert session.service.closed  # type: ignore[attr-defined]


def test_slow_teardown_happens_outside_the_lock(clock: FakeClock) -> None:
    registry = make_registry(clock)
    connector = FakeConnector()
    slow = registry.open("good-token", connector.connect)
    other = registry.open("good-token", connector.connect)
    closing, release = threading.Event(), threading.Event()

    def slow_close() -> None:
        closing.set()
        release.wait(5)

    slow.service._on_close = slow_close  # type: ignore[attr-defined]
    closer = threading.Thread(target=registry.close, args=(slow.id,))
    closer.start()
    assert closing.wait(5)
    # While one Discord client takes its time to close, others are served.
    assert registry.get(other.id) is other
    assert len(registry) == 1
    release.set()
    closer.join(5)
    registry.close_all()


def test_close_all_refuses_new_sessions_and_closes_every_service(clock: FakeClock) -> None:
    registry = make_registry(clock)
    connector = FakeConnector()
    sessions = [registry.open("good-token", connector.connect) for _ in range(3)]
    assert registry.close_all() == 3
    assert all(s.service.closed for s in sessions)  # type: ignore[attr-defined]
    with pytest.raises(ServiceUnavailable):
        registry.open("good-token", connector.connect)
    assert registry.close_all() == 0


def test_a_failing_close_does_not_keep_the_session(clock: FakeClock) -> None:
    registry = make_registry(clock)
    session = registry.open("good-token", FakeConnector().connect)

    def broken() -> None:
        raise RuntimeError("secret-token-text")

    session.service._on_close = broken  # type: ignore[attr-defined]
    assert registry.close(session.id) is True
    assert registry.get(session.id) is None


def test_a_session_whose_bot_failed_for_good_ends(clock: FakeClock) -> None:
    registry = make_registry(clock, max_sessions=1)
    connector = FakeConnector()
    session = registry.open("good-token", connector.connect)
    session.service.failed = True  # type: ignore[attr-defined]  # e.g. the token was revoked
    assert registry.get(session.id) is None
    assert session.service.closed  # type: ignore[attr-defined]
    # Its slot is free again.
    registry.open("good-token", connector.connect)


def test_the_sweeper_ends_failed_sessions_nobody_polls(clock: FakeClock) -> None:
    registry = make_registry(clock)
    session = registry.open("good-token", FakeConnector().connect)
    session.service.failed = True  # type: ignore[attr-defined]
    assert registry.expire_idle() == 1
    assert len(registry) == 0
