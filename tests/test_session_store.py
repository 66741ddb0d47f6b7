"""The session store interface, against the memory store (the reference) and the Redis
store: the same behaviour from both, then what only one of them does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from membersense.cluster.connection import RedisConnection
from membersense.cluster.notices import Notices
from membersense.cluster.sealing import TokenSealer
from membersense.cluster.sessions import RedisSessionStore
from membersense.sessions import Caps, MemorySessionStore, Refusal, SessionRecord, SessionStore
from membersense.sessions.store import ENDED_ELSEWHERE
from tests.fakes import FakeClock

IDLE_S = 60.0
PENDING_S = 10.0
CAPS = Caps(total=3, per_token=2, per_client=2)
SECRET = "a session secret of at least 32 characters"


@pytest.fixture
def ended() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def memory_store(clock: FakeClock, ended: list[tuple[str, str]]) -> MemorySessionStore:
    made = MemorySessionStore(idle_timeout=IDLE_S, pending_timeout=PENDING_S, clock=clock)
    made.set_end_listener(lambda record, reason: ended.append((record.id, reason)))
    return made


class RedisStores:
    """Redis stores of one test, as several processes would have them, closed afterwards."""

    def __init__(self, url: str, prefix: str, clock: FakeClock) -> None:
        self.url, self.prefix, self.clock = url, prefix, clock
        self.made: list[tuple[RedisConnection, Notices]] = []

    def make(
        self,
        *,
        idle: float = IDLE_S,
        secret: str = SECRET,
        ended: list[tuple[str, str]] | None = None,
    ) -> RedisSessionStore:
        connection = RedisConnection(self.url, self.prefix)
        notices = Notices(connection)
        store = RedisSessionStore(
            connection,
            notices,
            TokenSealer(secret),
            idle_timeout=idle,
            pending_timeout=PENDING_S,
            clock=self.clock,
        )
        assert notices.wait_listening(5)
        if ended is not None:
            store.set_end_listener(lambda record, reason: ended.append((record.id, reason)))
        self.made.append((connection, notices))
        return store

    def close(self) -> None:
        for connection, notices in self.made:
            notices.close()
            connection.close()


@pytest.fixture
def redis_stores(redis_url: str, redis_prefix: str, clock: FakeClock) -> Iterator[RedisStores]:
    stores = RedisStores(redis_url, redis_prefix, clock)
    yield stores
    stores.close()


@pytest.fixture(params=["memory", "redis"])
def store(
    request: pytest.FixtureRequest, memory_store: MemorySessionStore, ended: list[tuple[str, str]]
) -> SessionStore:
    if request.param == "memory":
        return memory_store
    return request.getfixturevalue("redis_stores").make(ended=ended)


def record(n: int, bot: str = "bot-a", client: str | None = "10.0.0.1") -> SessionRecord:
    return SessionRecord(
        id=f"{n:021d}",
        fingerprint=bot,
        guild_ids=(),
        created_at=0.0,
        last_activity=0.0,
        client=client,
        sealed_token=TokenSealer(SECRET).seal(f"token-of-{bot}"),
    )


def opened(store: SessionStore, n: int, **kwargs: str | None) -> SessionRecord:
    rec = record(n, **kwargs)  # type: ignore[arg-type]
    assert store.open(rec, CAPS) is None
    active = store.activate(rec.id, ("100", "200"))
    assert active is not None
    return active


def test_a_session_is_pending_until_activated(store: SessionStore) -> None:
    rec = record(1)
    assert store.open(rec, CAPS) is None
    assert store.get(rec.id) is None  # a login under way cannot be used yet
    assert store.count() == 1 and store.count_for("bot-a") == 1
    active = store.activate(rec.id, ("100",))
    assert active is not None and not active.pending
    found = store.get(rec.id)
    assert found is not None
    assert (found.id, found.fingerprint, found.guild_ids, found.client) == (
        rec.id,
        "bot-a",
        ("100",),
        "10.0.0.1",
    )
    assert active.default_guild_id == 100


@pytest.mark.parametrize(
    ("others", "refusal"),
    [
        (
            [
                {"bot": "b1", "client": "c1"},
                {"bot": "b2", "client": "c2"},
                {"bot": "b3", "client": "c3"},
            ],
            Refusal.FULL,
        ),
        ([{"bot": "bot-a", "client": "c1"}, {"bot": "bot-a", "client": "c2"}], Refusal.TOKEN),
        (
            [{"bot": "b1", "client": "10.0.0.1"}, {"bot": "b2", "client": "10.0.0.1"}],
            Refusal.CLIENT,
        ),
    ],
)
def test_caps_are_checked_at_open_and_pending_sessions_count(
    store: SessionStore, others: list[dict[str, str]], refusal: Refusal
) -> None:
    for n, kwargs in enumerate(others):
        assert store.open(record(n, **kwargs), CAPS) is None  # pending, never activated
    assert store.open(record(99), CAPS) is refusal
    assert store.count() == len(others)


def test_closing_frees_the_slot_and_is_reported_once(
    store: SessionStore, ended: list[tuple[str, str]]
) -> None:
    sessions = [opened(store, n, client=f"c{n}", bot=f"b{n}") for n in range(3)]
    assert store.open(record(9), CAPS) is Refusal.FULL
    closed = store.close(sessions[0].id)
    assert closed is not None and closed.id == sessions[0].id
    assert store.close(sessions[0].id) is None
    assert ended == [(sessions[0].id, "logout")]
    assert store.open(record(9), CAPS) is None


def test_activity_restarts_the_idle_timer_and_expired_sessions_end_lazily(
    memory_store: SessionStore, clock: FakeClock, ended: list[tuple[str, str]]
) -> None:
    store = memory_store
    session = opened(store, 1)
    clock.advance(IDLE_S - 1)
    assert store.get(session.id) is not None
    clock.advance(IDLE_S - 1)
    assert store.get(session.id) is not None  # refreshed a moment ago
    clock.advance(IDLE_S + 1)
    assert store.get(session.id) is None
    assert ended == [(session.id, "expired")]
    assert store.count() == 0


def test_expire_removes_stale_sessions_and_stale_logins(
    memory_store: SessionStore, clock: FakeClock, ended: list[tuple[str, str]]
) -> None:
    store = memory_store
    old = opened(store, 1, client="c1")
    stuck_login = record(2, client="c2")
    assert store.open(stuck_login, CAPS) is None  # its process died mid-login, say
    clock.advance(40)
    fresh = opened(store, 3, client="c3", bot="bot-b")
    clock.advance(30)  # old: 70 s idle; the login: 70 s pending; fresh: 30 s
    removed = {r.id for r in store.expire()}
    assert removed == {old.id, stuck_login.id}
    assert store.get(fresh.id) is not None
    assert sorted(ended) == sorted([(old.id, "expired"), (stuck_login.id, "expired")])


def test_close_for_ends_a_bots_logged_in_sessions_only(store: SessionStore) -> None:
    a1, a2 = opened(store, 1, client="c1"), opened(store, 2, client="c2")
    pending = record(3, client="c3", bot="bot-a")
    other = opened(store, 4, client="c4", bot="bot-b")
    caps = Caps(10, 10, 10)
    assert store.open(pending, caps) is None
    assert {r.id for r in store.close_for("bot-a", "failed")} == {a1.id, a2.id}
    assert store.count_for("bot-a") == 1  # the pending login is still deciding
    assert store.get(other.id) is not None
    # The memory store knows every bot with sessions; a shared one those it has seen.
    assert "bot-b" in store.fingerprints() <= {"bot-a", "bot-b"}


def test_shutdown_of_the_memory_store_ends_its_sessions(
    memory_store: SessionStore, ended: list[tuple[str, str]]
) -> None:
    opened(memory_store, 1)
    assert len(memory_store.shutdown()) == 1
    assert memory_store.open(record(2), CAPS) is Refusal.CLOSED
    assert memory_store.shutdown() == []
    assert ended[-1][1] == "shutdown"


def test_refuse_new_keeps_open_sessions(store: SessionStore) -> None:
    session = opened(store, 1)
    store.refuse_new()
    assert store.open(record(2), CAPS) is Refusal.CLOSED
    assert store.get(session.id) is not None


def test_concurrent_opens_never_pass_the_cap(store: SessionStore) -> None:
    caps = Caps(total=50, per_token=1000, per_client=1000)
    results: list[Refusal | None] = []
    lock = threading.Lock()

    def open_many(offset: int) -> None:
        for n in range(40):
            outcome = store.open(record(offset + n), caps)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=open_many, args=(k * 100,)) for k in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results.count(None) == 50 and store.count() == 50


# -- Redis only ---------------------------------------------------------------------------


def test_a_shutdown_process_keeps_the_sessions_for_the_others(redis_stores: RedisStores) -> None:
    leaving, staying = redis_stores.make(), redis_stores.make()
    session = opened(leaving, 1)
    assert leaving.shutdown() == []
    assert leaving.open(record(2), CAPS) is Refusal.CLOSED
    assert staying.get(session.id) is not None


def test_a_logout_on_one_process_ends_the_session_on_every_other_at_once(
    redis_stores: RedisStores,
) -> None:
    a, b, c = (redis_stores.make() for _ in range(3))
    session = opened(a, 1)
    assert b.get(session.id) is not None and c.get(session.id) is not None  # cached there now
    assert b.close(session.id) is not None
    deadline = time.monotonic() + 2
    while (
        a.get(session.id) is not None or c.get(session.id) is not None
    ) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert a.get(session.id) is None and c.get(session.id) is None


def test_the_first_session_a_process_serves_also_ends_when_it_ends_elsewhere(
    redis_url: str, redis_prefix: str, redis_stores: RedisStores, clock: FakeClock
) -> None:
    elsewhere = redis_stores.make()
    session = opened(elsewhere, 1)
    # A new worker: its notices start with the first request, which serves an event stream.
    connection = RedisConnection(redis_url, redis_prefix)
    pubsub = connection.client.pubsub

    def slow_pubsub(**kwargs: Any) -> Any:  # its subscription takes a while to be answered
        made = pubsub(**kwargs)
        subscribe = made.subscribe

        def slow_subscribe(*args: Any) -> Any:
            time.sleep(0.2)
            return subscribe(*args)

        made.subscribe = slow_subscribe
        return made

    connection.client.pubsub = slow_pubsub  # type: ignore[method-assign]
    notices = Notices(connection)
    fresh = RedisSessionStore(
        connection,
        notices,
        TokenSealer(SECRET),
        idle_timeout=IDLE_S,
        pending_timeout=PENDING_S,
        clock=clock,
    )
    ended: list[tuple[str, str]] = []
    fresh.set_end_listener(lambda record, reason: ended.append((record.id, reason)))
    try:
        assert fresh.get(session.id) is not None
        assert elsewhere.close(session.id) is not None  # a logout on another process
        deadline = time.monotonic() + 2
        while not ended and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ended == [(session.id, ENDED_ELSEWHERE)]  # its streams here end at once
    finally:
        notices.close()
        connection.close()


def test_copies_of_sessions_redis_expired_are_dropped_by_the_sweep(
    redis_stores: RedisStores, clock: FakeClock
) -> None:
    ended: list[tuple[str, str]] = []
    store = redis_stores.make(ended=ended)
    kept, lapsed = opened(store, 1), opened(store, 2)
    assert store.get(kept.id) is not None and store.get(lapsed.id) is not None
    clock.advance(IDLE_S / 2)
    assert store.expire() == [] and ended == []  # too recent to have expired: not even asked
    # Redis expires the second one (its TTL; as if idle everywhere), the first is in use
    # elsewhere; this process saw neither.
    store._redis.client.delete(store._keys.session(lapsed.id))
    clock.advance(IDLE_S)
    assert store.expire() == []  # Redis ended it, not this sweep: nothing to count or log
    assert ended == [(lapsed.id, ENDED_ELSEWHERE)]  # its streams and webhooks here end
    assert "cached=1" in repr(store)
    assert store.expire() == [] and ended == [(lapsed.id, ENDED_ELSEWHERE)]  # once


def test_the_caps_hold_across_processes(redis_stores: RedisStores) -> None:
    stores = [redis_stores.make() for _ in range(4)]
    caps = Caps(total=25, per_token=1000, per_client=1000)
    outcomes: list[Refusal | None] = []
    lock = threading.Lock()

    def open_many(k: int) -> None:
        for n in range(20):
            outcome = stores[k].open(record(k * 100 + n), caps)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=open_many, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert outcomes.count(None) == 25 and stores[0].count() == 25


def test_a_session_is_refreshed_in_redis_only_now_and_then(
    redis_stores: RedisStores, redis_url: str, clock: FakeClock
) -> None:
    store = redis_stores.make(idle=IDLE_S)
    session = opened(store, 1)
    key = f"{redis_stores.prefix}v1:session:{session.id}"
    client = redis.Redis.from_url(redis_url)
    try:
        client.pexpire(key, 30_000)  # as if half the idle time went by
        store.get(session.id)
        assert client.pttl(key) <= 30_000  # served from this process's copy: no write
        clock.advance(store.touch_interval + 1)
        store.get(session.id)
        assert client.pttl(key) > 50_000  # refreshed to the whole idle timeout
    finally:
        client.close()


def test_an_expired_session_is_gone_for_every_process_and_frees_its_slot(
    redis_stores: RedisStores, redis_url: str, clock: FakeClock, ended: list[tuple[str, str]]
) -> None:
    store = redis_stores.make(ended=ended)
    sessions = [opened(store, n, client=f"c{n}", bot=f"b{n}") for n in range(3)]
    assert store.open(record(9), CAPS) is Refusal.FULL
    client = redis.Redis.from_url(redis_url)
    try:
        # Redis lets the first session expire (as it would after SESSION_TIMEOUT idle).
        client.delete(f"{redis_stores.prefix}v1:session:{sessions[0].id}")
        client.zadd(f"{redis_stores.prefix}v1:sessions", {sessions[0].id: 0})
    finally:
        client.close()
    clock.advance(store.touch_interval + 1)
    assert store.get(sessions[0].id) is None
    assert ended == [(sessions[0].id, "expired")]
    assert store.open(record(9), CAPS) is None  # the slot is free: no sweeper needed


def test_a_changed_session_secret_ends_every_session(redis_stores: RedisStores) -> None:
    before = redis_stores.make()
    session = opened(before, 1)
    after = redis_stores.make(secret="another secret, also 32 characters long")
    assert after.get(session.id) is None
    assert before.get(session.id) is None or before.count() == 0
