"""The session store interface, against the memory store (the reference for every store)."""

from __future__ import annotations

import threading

import pytest

from membersense.sessions import Caps, MemorySessionStore, Refusal, SessionRecord, SessionStore
from tests.fakes import FakeClock

IDLE_S = 60.0
PENDING_S = 10.0
CAPS = Caps(total=3, per_token=2, per_client=2)


@pytest.fixture
def ended() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def store(clock: FakeClock, ended: list[tuple[str, str]]) -> SessionStore:
    made = MemorySessionStore(idle_timeout=IDLE_S, pending_timeout=PENDING_S, clock=clock)
    made.set_end_listener(lambda record, reason: ended.append((record.id, reason)))
    return made


def record(n: int, bot: str = "bot-a", client: str | None = "10.0.0.1") -> SessionRecord:
    return SessionRecord(id=f"{n:021d}", fingerprint=bot, guild_ids=(), created_at=0.0,
                         last_activity=0.0, client=client)


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
    assert store.get(rec.id) == active
    assert active.default_guild_id == 100


@pytest.mark.parametrize(("others", "refusal"), [
    ([{"bot": "b1", "client": "c1"}, {"bot": "b2", "client": "c2"},
      {"bot": "b3", "client": "c3"}], Refusal.FULL),
    ([{"bot": "bot-a", "client": "c1"}, {"bot": "bot-a", "client": "c2"}], Refusal.TOKEN),
    ([{"bot": "b1", "client": "10.0.0.1"}, {"bot": "b2", "client": "10.0.0.1"}], Refusal.CLIENT),
])
def test_caps_are_checked_at_open_and_pending_sessions_count(
        store: SessionStore, others: list[dict[str, str]], refusal: Refusal) -> None:
    for n, kwargs in enumerate(others):
        assert store.open(record(n, **kwargs), CAPS) is None  # pending, never activated
    assert store.open(record(99), CAPS) is refusal
    assert store.count() == len(others)


def test_closing_frees_the_slot_and_is_reported_once(store: SessionStore,
                                                     ended: list[tuple[str, str]]) -> None:
    sessions = [opened(store, n, client=f"c{n}", bot=f"b{n}") for n in range(3)]
    assert store.open(record(9), CAPS) is Refusal.FULL
    assert store.close(sessions[0].id) == sessions[0]
    assert store.close(sessions[0].id) is None
    assert ended == [(sessions[0].id, "logout")]
    assert store.open(record(9), CAPS) is None


def test_activity_restarts_the_idle_timer_and_expired_sessions_end_lazily(
        store: SessionStore, clock: FakeClock, ended: list[tuple[str, str]]) -> None:
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
        store: SessionStore, clock: FakeClock, ended: list[tuple[str, str]]) -> None:
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
    assert store.fingerprints() == {"bot-a", "bot-b"}
    assert store.get(other.id) is not None


def test_shutdown_refuses_new_sessions(store: SessionStore,
                                        ended: list[tuple[str, str]]) -> None:
    opened(store, 1)
    assert len(store.shutdown()) == 1
    assert store.open(record(2), CAPS) is Refusal.CLOSED
    assert store.shutdown() == []
    assert ended[-1][1] == "shutdown"


def test_refuse_new_keeps_open_sessions(store: SessionStore) -> None:
    session = opened(store, 1)
    store.refuse_new()
    assert store.open(record(2), CAPS) is Refusal.CLOSED
    assert store.get(session.id) is not None


def test_concurrent_opens_never_pass_the_cap(clock: FakeClock) -> None:
    store = MemorySessionStore(idle_timeout=IDLE_S, pending_timeout=PENDING_S, clock=clock)
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
