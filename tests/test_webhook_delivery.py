"""The deliverer on an event loop of its own, against a real HTTP receiver: order, signatures,
retries with backoff, what is not retried, disabling, and the SSRF guard at delivery time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from membersense.bus import Event
from membersense.webhooks.delivery import BLOCKED, Deliverer, DeliveryPolicy
from membersense.webhooks.memory import MemorySubscriptionStore
from membersense.webhooks.store import Subscription
from tests.receiver import Receiver, running_receiver
from tests.servers import free_port

TOPIC = "bot/100"
SECRET = "whsec_test"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def subscription(url: str, **changes: Any) -> Subscription:
    return Subscription(
        id="sub-1",
        session_id="session-1",
        topic=TOPIC,
        guild_id="100",
        url=url,
        events=("member.join",),
        secret=SECRET,
        created_at=time.time(),
        **changes,
    )


def event(n: int, type: str = "member.join") -> Event:
    return Event(f"e-{n}", type, TOPIC, "100", 1_700_000_000_000 + n, {"id": str(n)})


def policy(**changes: Any) -> DeliveryPolicy:
    base: dict[str, Any] = {
        "timeout_s": 2.0,
        "max_attempts": 3,
        "disable_after": 3,
        "allow_private": True,
        "backoff_s": 0.01,
    }
    return DeliveryPolicy(**{**base, **changes})


class Harness:
    """A deliverer, its store and what it did, for one scenario on one loop."""

    def __init__(self, url: str, **policy_changes: Any) -> None:
        self.store = MemorySubscriptionStore()
        self.store.add(subscription(url), limit=5)
        self.touched: list[str] = []
        self.slept: list[float] = []
        self.deliverer = Deliverer(
            self.store,
            policy(**policy_changes),
            touch=self.touched.append,
            draw=lambda: 1.0,
            sleep=self._sleep,
        )

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)

    @property
    def record(self) -> Subscription:
        found = self.store.get("sub-1")
        assert found is not None
        return found

    def send(self, *events: Event) -> None:
        for item in events:
            self.deliverer.enqueue(self.record, item)

    async def __aenter__(self) -> Harness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.deliverer.close()

    async def settle(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())


def test_deliveries_arrive_in_order_signed_and_count_as_session_activity(
    receiver: Receiver,
) -> None:
    async def scenario() -> None:
        async with Harness(receiver.url) as harness:
            harness.send(event(1), event(2), event(3))
            await harness.settle(
                lambda: len(receiver.deliveries) == 3 and harness.deliverer.pending("sub-1") == 0
            )
            await harness.settle(lambda: harness.touched == ["session-1"])  # at most every 30 s
            got = receiver.deliveries
            assert [d.json()["id"] for d in got] == ["e-1", "e-2", "e-3"]
            first = got[0]
            assert first.json() == event(1).to_json()
            assert first.headers["X-MemberSense-Event"] == "member.join"
            assert first.headers["X-MemberSense-Delivery"] == "e-1"
            assert first.headers["Content-Type"] == "application/json"
            assert abs(int(first.headers["X-MemberSense-Timestamp"]) - time.time()) < 60
            assert all(d.signed_with(SECRET) for d in got)
            assert not first.signed_with("whsec_other")
            assert harness.record.failures == 0 and harness.record.last_delivery_at is not None

    run(scenario)


def test_a_5xx_is_tried_again_after_a_growing_backoff_with_the_same_id(receiver: Receiver) -> None:
    receiver.answers = [500, 503]

    async def scenario() -> None:
        async with Harness(receiver.url) as harness:
            harness.send(event(1), event(2))
            await harness.settle(lambda: len(receiver.deliveries) == 4)
            assert [d.json()["id"] for d in receiver.deliveries] == ["e-1", "e-1", "e-1", "e-2"]
            assert [d.status for d in receiver.deliveries] == [500, 503, 200, 200]
            assert harness.slept == [0.01, 0.02]  # doubling (the jitter drew its maximum)
            assert harness.record.failures == 0

    run(scenario)


def test_the_backoff_is_jittered_and_capped() -> None:
    rules = policy(backoff_s=1.0, backoff_max_s=8.0)
    assert rules.backoff(1, lambda: 0.0) == 0.5 and rules.backoff(1, lambda: 1.0) == 1.0
    assert rules.backoff(3, lambda: 1.0) == 4.0
    assert rules.backoff(10, lambda: 1.0) == 8.0


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (404, "answered 404"),
        (302, "answered 302: redirects are not followed"),
    ],
)
def test_a_4xx_or_a_redirect_is_not_tried_again(
    receiver: Receiver, answer: int, error: str
) -> None:
    receiver.answers = [answer]

    async def scenario() -> None:
        async with Harness(receiver.url) as harness:
            harness.send(event(1))
            await harness.settle(lambda: harness.record.failures == 1)
            assert len(receiver.deliveries) == 1 and harness.record.last_error == error
            assert receiver.deliveries[0].path == "/hook"  # /elsewhere was never asked for

    run(scenario)


def test_a_delivery_gives_up_after_its_tries_and_the_next_one_goes_on(receiver: Receiver) -> None:
    receiver.answers = [500, 500, 500]

    async def scenario() -> None:
        async with Harness(receiver.url) as harness:
            harness.send(event(1))
            await harness.settle(lambda: harness.record.failures == 1)
            assert harness.record.last_error == "answered 500 (after 3 tries)"
            harness.send(event(2))
            await harness.settle(lambda: harness.record.failures == 0)
            assert [d.json()["id"] for d in receiver.deliveries] == ["e-1"] * 3 + ["e-2"]
            assert harness.record.last_error == "answered 500 (after 3 tries)"  # still shown

    run(scenario)


def test_a_receiver_that_keeps_failing_is_disabled(receiver: Receiver) -> None:
    receiver.answers = [500, 500]

    async def scenario() -> None:
        async with Harness(receiver.url, max_attempts=1, disable_after=2) as harness:
            harness.send(event(1), event(2), event(3))
            await harness.settle(lambda: harness.record.disabled)
            await asyncio.sleep(0.2)
            assert len(receiver.deliveries) == 2  # the third was never sent
            assert harness.record.failures == 2
            assert harness.record.last_error == "answered 500 (after 1 tries)"
            assert harness.deliverer.pending("sub-1") == 0

    run(scenario)


def test_a_receiver_that_does_not_answer_times_out(receiver: Receiver) -> None:
    receiver.answers = ["hang"]

    async def scenario() -> None:
        async with Harness(receiver.url, timeout_s=0.3, max_attempts=1) as harness:
            harness.send(event(1))
            await harness.settle(lambda: harness.record.failures == 1)
            assert harness.record.last_error == "no answer within 0.3 s (after 1 tries)"

    run(scenario)


def test_a_receiver_that_is_not_there_is_a_connection_failure() -> None:
    async def scenario() -> None:
        async with Harness(f"http://127.0.0.1:{free_port()}/hook", max_attempts=2) as harness:
            harness.send(event(1))
            await harness.settle(lambda: harness.record.failures == 1)
            assert harness.record.last_error == (
                "the connection to the receiver failed (after 2 tries)"
            )

    run(scenario)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_private_address_is_refused_at_delivery_without_connecting(
    receiver: Receiver, host: str
) -> None:
    url = receiver.url.replace("127.0.0.1", host)

    async def scenario() -> None:
        async with Harness(url, allow_private=False) as harness:
            harness.send(event(1))
            await harness.settle(lambda: harness.record.failures == 1)
            assert harness.record.last_error == BLOCKED
            assert harness.slept == []  # not tried again

    run(scenario)
    assert receiver.deliveries == []


def test_a_receiver_too_far_behind_is_disabled(receiver: Receiver) -> None:
    receiver.answers = ["hang"]

    async def scenario() -> None:
        async with Harness(receiver.url, max_pending=2) as harness:
            harness.send(event(1))
            await asyncio.sleep(0.1)  # the first is being delivered, the receiver holds it
            harness.send(event(2), event(3), event(4))
            assert harness.record.disabled
            assert harness.record.last_error == "2 events were waiting: the receiver is too slow"
            assert harness.deliverer.pending("sub-1") == 0

    run(scenario)


def test_stop_drops_an_outbox_and_close_stops_everything(receiver: Receiver) -> None:
    receiver.answers = ["hang"]

    async def scenario() -> None:
        async with Harness(receiver.url) as harness:
            harness.send(event(1), event(2))
            await asyncio.sleep(0.1)
            harness.deliverer.stop("sub-1")
            await asyncio.sleep(0.05)
            assert harness.deliverer.pending("sub-1") == 0
        harness.send(event(3))  # closed: ignored
        assert harness.deliverer.pending("sub-1") == 0
        current = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not current] == []

    run(scenario)
