"""Webhooks a process hears of late: the events it published since one was made, kept a while
(RecentEvents), are what that webhook's deliveries begin with, in order and once, whether
its first event or the store's report comes first."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from membersense.bus import Event, MemoryEventBus
from membersense.config import load_settings
from membersense.webhooks.memory import MemorySubscriptionStore
from membersense.webhooks.recent import RecentEvents
from membersense.webhooks.service import Webhooks
from membersense.webhooks.store import Subscription
from tests.fakes import FakeClock
from tests.receiver import Receiver, running_receiver

TOPIC = "bot/100"


def event(n: int, at_ms: int, topic: str = TOPIC) -> Event:
    return Event(f"e.{n}", "member.join", topic, "100", at_ms, {"id": str(n)})


# -- RecentEvents ------------------------------------------------------------------------------


def test_recent_events_since_a_time_up_to_an_event() -> None:
    clock = FakeClock(1_700_000_000.0)
    recent = RecentEvents(window_s=10, clock=clock)
    now_ms = int(clock() * 1000)
    events = [event(n, now_ms + n) for n in range(4)]
    for each in events:
        recent.add(each)
    recent.add(event(9, now_ms, topic="bot/200"))
    assert recent.since(TOPIC, now_ms + 1) == events[1:]
    assert recent.since(TOPIC, now_ms, until="e.2") == events[:2]
    assert recent.since("bot/300", 0) == []


def test_recent_events_keep_a_window_and_at_most_their_share_of_a_topic() -> None:
    clock = FakeClock(1_700_000_000.0)
    recent = RecentEvents(window_s=10, per_topic=3, clock=clock)
    start_ms = int(clock() * 1000)
    recent.add(event(0, start_ms, topic="bot/quiet"))
    for n in range(5):
        recent.add(event(n, start_ms + n))
    assert [e.id for e in recent.since(TOPIC, 0)] == ["e.2", "e.3", "e.4"]
    clock.advance(11)
    recent.add(event(5, int(clock() * 1000)))
    assert [e.id for e in recent.since(TOPIC, 0)] == ["e.5"]
    assert recent.since("bot/quiet", 0) == []  # swept: nothing new for the window
    assert "topics=1" in repr(recent)
    recent.forget(lambda topic: topic.startswith("bot/"))
    assert recent.since(TOPIC, 0) == []


# -- a webhook heard of late -------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    settings = load_settings(environ={}, overrides={"WEBHOOK_ALLOW_PRIVATE": "1"})
    made = Webhooks(
        settings,
        MemoryEventBus(100),
        MemorySubscriptionStore(),
        bridge=None,
        touch=lambda session_id: None,
    )
    yield made
    made.close()


def late_subscription(url: str, made_ms: int) -> Subscription:
    return Subscription(
        id="late",
        session_id="s",
        topic=TOPIC,
        guild_id="100",
        url=url,
        events=("member.join",),
        secret="whsec_late",
        created_at=made_ms / 1000,
    )


def publish(webhooks: Webhooks, n: int) -> Event:
    # As the bus does: subscribers hear of every event published (here, off the loop).
    published = Event(
        f"e.{n}", "member.join", TOPIC, "100", int(time.time() * 1000), {"id": str(n)}
    )
    webhooks._on_event(published)
    return published


def test_a_webhook_heard_of_late_begins_with_what_it_missed_at_its_first_event(
    webhooks: Webhooks, receiver: Receiver
) -> None:
    publish(webhooks, 0)  # before it was made: not its business
    time.sleep(0.002)
    made_ms = int(time.time() * 1000)
    missed = [publish(webhooks, n) for n in (1, 2)]  # made, but not known here yet
    webhooks.store.add(late_subscription(receiver.url, made_ms), limit=5)
    latest = publish(webhooks, 3)
    deliveries = receiver.wait_for(3)
    assert [d.json()["id"] for d in deliveries] == [e.id for e in [*missed, latest]]
    time.sleep(0.2)
    assert len(receiver.deliveries) == 3  # each once


def test_a_webhook_heard_of_late_gets_what_it_missed_when_the_store_reports_it(
    webhooks: Webhooks, receiver: Receiver
) -> None:
    made_ms = int(time.time() * 1000)
    missed = [publish(webhooks, n) for n in (1, 2)]
    subscription = late_subscription(receiver.url, made_ms)
    webhooks.store.add(subscription, limit=5)
    webhooks.begin([subscription])  # no event follows: the report alone delivers them
    webhooks.begin([subscription])  # a second report changes nothing
    assert [d.json()["id"] for d in receiver.wait_for(2)] == [e.id for e in missed]
    latest = publish(webhooks, 3)
    assert receiver.wait_for(3)[-1].json()["id"] == latest.id
    time.sleep(0.2)
    assert len(receiver.deliveries) == 3


def test_a_bot_another_process_publishes_now_leaves_nothing_to_begin_with(
    webhooks: Webhooks, receiver: Receiver
) -> None:
    made_ms = int(time.time() * 1000)
    publish(webhooks, 1)
    webhooks.forget_bot("bot")  # Redis mode: this process lost the bot's lease
    subscription = late_subscription(receiver.url, made_ms)
    webhooks.store.add(subscription, limit=5)
    webhooks.begin([subscription])
    latest = publish(webhooks, 2)
    assert [d.json()["id"] for d in receiver.wait_for(1)] == [latest.id]
    time.sleep(0.2)
    assert len(receiver.deliveries) == 1
