"""Redis mode's event parts against a real Redis: stream tickets any process redeems, webhook
subscriptions registered anywhere and delivered by the bot's owner, and event numbers that go
on across owners so a new owner knows what a webhook has not had yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from membersense.bus import Batch, topic_of
from membersense.cluster.bus import RedisEventBus
from membersense.cluster.connection import RedisConnection
from membersense.cluster.notices import Notices
from membersense.cluster.sealing import TokenSealer
from membersense.cluster.tickets import RedisTicketStore
from membersense.cluster.webhooks import RedisSubscriptionStore
from membersense.cluster.writer import Writer
from membersense.webhooks.store import Subscription
from tests.integration.support import wait_until

BOT = "f00dfeedf00dfeed"
TOPIC = topic_of(BOT, 7)
SECRET = "s" * 40


class Process:
    """One process's Redis-mode parts (a connection, its notices and writer)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.connection = RedisConnection(url, prefix)
        self.notices = Notices(self.connection)
        self.writer = Writer(self.connection)
        self.sealer = TokenSealer(SECRET)
        self.subscriptions = RedisSubscriptionStore(
            self.connection, self.notices, self.writer, self.sealer
        )
        self.notices.start()
        assert self.notices.wait_listening(5)

    def bus(self, capacity: int = 100) -> RedisEventBus:
        return RedisEventBus(self.connection, self.writer, capacity=capacity, retention_s=60)

    def close(self) -> None:
        self.notices.close()
        self.writer.close()
        self.connection.close()


@pytest.fixture
def processes(redis_url: str, redis_prefix: str) -> Iterator[tuple[Process, Process]]:
    a, b = Process(redis_url, redis_prefix), Process(redis_url, redis_prefix)
    yield a, b
    a.close()
    b.close()


def open_session(process: Process, session_id: str) -> None:
    # Subscriptions of sessions that are gone from Redis are dropped: make it exist.
    process.connection.client.hset(process.connection.keys.session(session_id), "bot", BOT)


def subscription(number: int, session_id: str = "session-a", **fields: object) -> Subscription:
    values: dict = dict(
        id=f"hook{number}",
        session_id=session_id,
        topic=TOPIC,
        guild_id="7",
        url=f"https://example.com/{number}",
        events=("message.create",),
        secret=f"whsec_{number}",
        created_at=time.time() + number / 1000,
    )
    values.update(fields)
    return Subscription(**values)


# -- tickets -----------------------------------------------------------------------------------


def test_a_ticket_issued_by_one_process_opens_once_in_another(
    processes: tuple[Process, Process],
) -> None:
    a, b = (RedisTicketStore(p.connection) for p in processes)
    ticket = a.issue("session-a")
    assert len(ticket) == 32
    assert b.redeem(ticket) == "session-a"
    assert a.redeem(ticket) is None and b.redeem(ticket) is None
    for odd in ("", "x" * 1000, "a b", ticket + "!", "*"):
        assert b.redeem(odd) is None


def test_a_ticket_expires(processes: tuple[Process, Process]) -> None:
    store = RedisTicketStore(processes[0].connection, ttl_s=0.05)
    ticket = store.issue("session-a")
    time.sleep(0.1)
    assert store.redeem(ticket) is None


# -- subscriptions -------------------------------------------------------------------------------


def test_a_subscription_made_anywhere_is_listed_everywhere_with_its_secret_sealed(
    processes: tuple[Process, Process], redis_url: str
) -> None:
    a, b = processes
    first, second = subscription(1), subscription(2)
    assert a.subscriptions.add(first, limit=2) and b.subscriptions.add(second, limit=2)
    assert not a.subscriptions.add(subscription(3), limit=2)  # the session's limit
    assert [s.id for s in b.subscriptions.of_session("session-a")] == ["hook1", "hook2"]
    assert a.subscriptions.get("hook2") == second  # every field back, the secret opened
    client = redis.Redis.from_url(redis_url)
    try:
        stored = b"".join(
            b"".join(client.hgetall(key).values())
            for key in client.scan_iter(match=a.connection.keys.webhook("*"))
        )
    finally:
        client.close()
    assert b"whsec_1" not in stored and b"whsec_2" not in stored and b"example.com/1" in stored
    # Under another SESSION_SECRET its secret does not open: as if it were not there.
    other = RedisSubscriptionStore(a.connection, a.notices, a.writer, TokenSealer("t" * 40))
    assert other.get("hook1") is None


def test_removing_a_session_removes_its_subscriptions_only(
    processes: tuple[Process, Process],
) -> None:
    a, b = processes
    a.subscriptions.add(subscription(1), limit=5)
    a.subscriptions.add(subscription(2), limit=5)
    a.subscriptions.add(subscription(3, session_id="session-b"), limit=5)
    removed = b.subscriptions.remove_session("session-a")
    assert sorted(s.id for s in removed) == ["hook1", "hook2"]
    assert a.subscriptions.get("hook1") is None and a.subscriptions.of_session("session-a") == []
    assert [s.id for s in a.subscriptions.of_session("session-b")] == ["hook3"]
    assert b.subscriptions.remove("hook1") is None


def test_only_the_owner_delivers_and_its_mirror_follows_changes_made_anywhere(
    processes: tuple[Process, Process],
) -> None:
    owner, other = processes
    heard: list[list[str]] = []  # what the owner's webhooks are told to begin delivering
    owner.subscriptions.on_mirrored(lambda found: heard.append([s.id for s in found]))
    open_session(owner, "session-a")
    owner.subscriptions.add(subscription(1), limit=5)
    assert owner.subscriptions.of_topic(TOPIC) == []  # nobody delivers until it owns the bot
    assert [s.id for s in owner.subscriptions.mirror(BOT)] == ["hook1"]
    assert [s.id for s in owner.subscriptions.of_topic(TOPIC)] == ["hook1"]
    assert other.subscriptions.of_topic(TOPIC) == []
    # What a deliverer reads on the loop: the mirror only, never Redis.
    assert owner.subscriptions.delivering("hook1") is not None
    assert other.subscriptions.delivering("hook1") is None
    assert heard == []  # a takeover begins its subscriptions itself (from the streams)

    other.subscriptions.add(subscription(2), limit=5)  # registered through another process
    wait_until(
        lambda: len(owner.subscriptions.of_topic(TOPIC)) == 2,
        timeout=5,
        what="the owner to hear of the new subscription",
    )
    wait_until(lambda: heard == [["hook2"]], timeout=5, what="the new one to be reported")
    other.subscriptions.remove("hook1")
    wait_until(
        lambda: [s.id for s in owner.subscriptions.of_topic(TOPIC)] == ["hook2"],
        timeout=5,
        what="the owner to hear of the removal",
    )

    assert owner.subscriptions.delivering("hook1") is None
    owner.subscriptions.unmirror(BOT)
    assert owner.subscriptions.of_topic(TOPIC) == []
    assert owner.subscriptions.delivering("hook2") is None
    other.subscriptions.add(subscription(3), limit=5)
    time.sleep(0.2)  # its notice comes and goes: a process that gave the bot up stays out
    assert owner.subscriptions.of_topic(TOPIC) == []


def test_a_subscription_whose_session_expired_is_dropped_when_mirrored(
    processes: tuple[Process, Process],
) -> None:
    owner, _ = processes
    open_session(owner, "session-a")
    owner.subscriptions.add(subscription(1), limit=5)
    owner.subscriptions.add(subscription(2, session_id="expired"), limit=5)
    assert [s.id for s in owner.subscriptions.mirror(BOT)] == ["hook1"]
    assert owner.subscriptions.get("hook2") is None


def test_delivery_fields_are_written_back_and_a_deleted_subscription_stays_deleted(
    processes: tuple[Process, Process],
) -> None:
    owner, other = processes
    open_session(owner, "session-a")
    owner.subscriptions.add(subscription(1), limit=5)
    owner.subscriptions.add(subscription(2), limit=5)
    owner.subscriptions.mirror(BOT)
    updated = owner.subscriptions.update(
        "hook1", failures=2, last_error="HTTP 500", cursor="abcd.12", last_delivery_at=1234.5
    )
    assert updated is not None and updated.failures == 2
    with pytest.raises(ValueError):
        owner.subscriptions.update("hook1", url="https://elsewhere.example")
    assert owner.writer.flush(5)
    seen = other.subscriptions.get("hook1")
    assert seen is not None
    assert (seen.failures, seen.last_error, seen.cursor, seen.last_delivery_at) == (
        2,
        "HTTP 500",
        "abcd.12",
        1234.5,
    )

    other.subscriptions.remove("hook2")
    owner.subscriptions.update("hook2", failures=1)  # raced the removal: must not revive it
    assert owner.writer.flush(5)
    assert other.subscriptions.get("hook2") is None
    assert owner.connection.client.exists(owner.connection.keys.webhook("hook2")) == 0


# -- event numbers across owners --------------------------------------------------------------


def test_a_new_owner_goes_on_numbering_and_finds_what_came_after_a_delivered_event(
    processes: tuple[Process, Process],
) -> None:
    a, b = processes
    first = a.bus()
    first.restart(TOPIC)
    old = [first.publish(TOPIC, "message.create", {"n": i}) for i in range(5)]
    assert a.writer.flush(5)

    second = b.bus()  # a new owner: adopt before it publishes
    second.adopt(BOT)
    second.restart(TOPIC)
    new = [second.publish(TOPIC, "message.create", {"n": i}) for i in range(5, 8)]
    assert b.writer.flush(5)
    assert new[0].id.split(".")[0] != old[0].id.split(".")[0]  # a new epoch ...
    assert int(new[0].id.split(".")[1]) == int(old[-1].id.split(".")[1]) + 1  # ... same count

    after = second.since(TOPIC, old[2].id)
    assert after is not None
    assert [e.data["n"] for e in after] == [3, 4, 5, 6, 7]
    assert [e.id for e in after] == [e.id for e in old[3:] + new]  # the ids they were given
    assert second.since(TOPIC, new[-1].id) == []
    assert second.since(TOPIC, "nonsense") is None


def test_events_since_a_subscription_was_made_when_none_was_delivered(
    processes: tuple[Process, Process],
) -> None:
    a, _ = processes
    bus = a.bus()
    bus.restart(TOPIC)
    bus.publish(TOPIC, "message.create", {"n": 0})
    assert a.writer.flush(5)
    time.sleep(0.01)
    made_ms = int(time.time() * 1000)
    bus.publish(TOPIC, "message.create", {"n": 1})
    assert a.writer.flush(5)
    found = bus.since(TOPIC, None, made_ms)
    assert found is not None and [e.data["n"] for e in found] == [1]


def test_events_trimmed_away_since_a_delivered_one_are_reported(
    processes: tuple[Process, Process],
) -> None:
    a, _ = processes
    bus = a.bus(capacity=3)
    bus.restart(TOPIC)
    events = [bus.publish(TOPIC, "message.create", {"n": i}) for i in range(450)]
    assert a.writer.flush(5)
    assert bus.since(TOPIC, events[0].id) is None  # MAXLEN ~ trimmed whole nodes
    kept = bus.since(TOPIC, events[-2].id)
    assert kept is not None and [e.data["n"] for e in kept] == [449]


def blocked_reads(process: Process) -> int:
    """Clients of the Redis waiting in XREAD now (a shared Redis may have others')."""
    return sum(
        1
        for c in process.connection.client.client_list()
        if c.get("cmd") == "xread" and "b" in c.get("flags", "")
    )


def test_a_reader_waiting_while_a_new_owner_restarts_the_topic_gets_a_reset(
    processes: tuple[Process, Process],
) -> None:
    a, b = processes
    first = a.bus()
    first.restart(TOPIC)
    old = [first.publish(TOPIC, "message.create", {"n": i}) for i in range(2)]
    assert a.writer.flush(5)
    reader = b.bus()
    answers: list[Batch] = []
    before = blocked_reads(a)
    waiting = threading.Thread(
        target=lambda: answers.append(reader.read(TOPIC, old[-1].id, timeout=10))
    )
    waiting.start()
    try:
        wait_until(lambda: blocked_reads(a) > before, timeout=5, what="the read to wait")
        # Meanwhile the owner dies and another takes over, in a new gateway session: what
        # Discord sent in between is lost, so the waiting reader must get a reset.
        second = a.bus()
        second.adopt(BOT)
        second.restart(TOPIC)
        new = second.publish(TOPIC, "message.create", {"n": 2})
        assert a.writer.flush(5)
    finally:
        waiting.join(15)
    [batch] = answers
    assert batch.reset and batch.events == ()
    # From the reset on, the new owner's events, none skipped.
    assert [e.id for e in reader.read(TOPIC, batch.cursor).events] == [new.id]
