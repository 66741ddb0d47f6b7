"""Logging in and out over a store and the Discord service; the idle sweeper."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from membersense.discord.errors import InvalidToken, NoGuilds
from membersense.discord.tokens import fingerprint
from membersense.sessions import (
    ID_LENGTH,
    Caps,
    LoginRefused,
    MemorySessionStore,
    Refusal,
    SessionManager,
)
from tests.fakes import FakeClock, FakeDiscord

_managers: list[SessionManager] = []
DEFAULT_CAPS = Caps(3, 10, 10)


def make_manager(
    clock: FakeClock,
    discord: FakeDiscord | None = None,
    *,
    caps: Caps = DEFAULT_CAPS,
    idle: float = 60.0,
    interval: float = 3600.0,
) -> SessionManager:
    store = MemorySessionStore(idle_timeout=idle, pending_timeout=30.0, clock=clock)
    manager = SessionManager(store, discord or FakeDiscord(), caps=caps, cleanup_interval=interval)
    _managers.append(manager)
    return manager


@pytest.fixture(autouse=True)
def _close_managers() -> Iterator[None]:
    yield
    while _managers:
        _managers.pop().close_all()


def test_login_opens_a_session_named_by_a_nanoid_and_the_bots_fingerprint(clock: FakeClock) -> None:
    manager = make_manager(clock)
    session, bot = manager.login("good-token", "10.0.0.1")
    assert len(session.id) == ID_LENGTH
    assert session.fingerprint == fingerprint("good-token") == bot.fingerprint
    assert session.guild_ids == ("100",) and not session.pending
    assert manager.authenticate(session.id) == session
    assert "good-token" not in repr(session)


def test_ids_are_unique(clock: FakeClock) -> None:
    manager = make_manager(clock, caps=Caps(200, 200, 200))
    assert len({manager.login("good-token")[0].id for _ in range(200)}) == 200


def test_a_failed_login_gives_its_slot_back_and_releases_the_bot(clock: FakeClock) -> None:
    discord = FakeDiscord({"good-token": FakeDiscord().tokens["good-token"], "homeless": []})
    manager = make_manager(clock, discord, caps=Caps(1, 10, 10))
    with pytest.raises(InvalidToken):
        manager.login("wrong")
    with pytest.raises(NoGuilds):
        manager.login("homeless")
    assert manager.store.count() == 0
    assert discord.released() == [fingerprint("wrong"), fingerprint("homeless")]
    manager.login("good-token")
    assert manager.store.count() == 1


def test_the_cap_counts_logins_still_under_way(clock: FakeClock) -> None:
    discord = FakeDiscord()
    discord.gate = threading.Event()
    manager = make_manager(clock, discord, caps=Caps(1, 10, 10))
    results: list[object] = []
    slow = threading.Thread(target=lambda: results.append(manager.login("good-token")))
    slow.start()
    deadline = time.monotonic() + 5
    while manager.store.count() == 0 and time.monotonic() < deadline:  # the login has its slot
        time.sleep(0.001)
    with pytest.raises(LoginRefused) as refused:
        manager.login("good-token")
    assert refused.value.refusal is Refusal.FULL
    discord.gate.set()
    slow.join(5)
    assert len(results) == 1 and manager.store.count() == 1


@pytest.mark.parametrize(
    ("caps", "client", "refusal"),
    [
        (Caps(10, 2, 10), None, Refusal.TOKEN),
        (Caps(10, 10, 2), "10.0.0.7", Refusal.CLIENT),
    ],
)
def test_per_token_and_per_client_caps(
    clock: FakeClock, caps: Caps, client: str | None, refusal: Refusal
) -> None:
    manager = make_manager(clock, caps=caps)
    for _ in range(2):
        manager.login("good-token", "10.0.0.7")
    with pytest.raises(LoginRefused) as refused:
        manager.login("good-token", client or "10.0.0.8")
    assert refused.value.refusal is refusal
    assert manager.store.count() == 2  # nobody else's session was evicted


def test_logout_and_expiry_release_the_bot(clock: FakeClock) -> None:
    discord = FakeDiscord()
    manager = make_manager(clock, discord, idle=60)
    first, _ = manager.login("good-token")
    second, _ = manager.login("good-token")
    assert manager.logout(first.id) is True
    assert manager.logout(first.id) is False
    clock.advance(61)
    assert manager.authenticate(second.id) is None
    assert discord.released() == [fingerprint("good-token")] * 2


def test_sessions_of_a_bot_that_failed_for_good_end(clock: FakeClock) -> None:
    discord = FakeDiscord()
    manager = make_manager(clock, discord, caps=Caps(2, 10, 10))
    polled, _ = manager.login("good-token")
    quiet, _ = manager.login("good-token")
    discord.failures[fingerprint("good-token")] = InvalidToken().failure()  # revoked
    assert manager.authenticate(polled.id) is None  # the next request ends it
    assert manager.sweep() == 1  # the sweeper ends the one nobody polls
    assert manager.store.count() == 0


def test_the_sweeper_thread_expires_sessions_every_interval(clock: FakeClock) -> None:
    manager = make_manager(clock, idle=60, interval=0.01)
    before = {t.ident for t in threading.enumerate()}
    assert {t.ident for t in threading.enumerate()} == before  # nothing before a login
    manager.login("good-token")
    sweeper = next(t for t in threading.enumerate() if t.name == "membersense-session-sweeper")
    assert sweeper.daemon
    clock.advance(61)
    deadline = time.monotonic() + 5
    while manager.store.count() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert manager.store.count() == 0
    manager.close_all()
    assert not sweeper.is_alive(), "close_all stops the sweeper"


def test_close_all_ends_every_session_and_refuses_new_ones(clock: FakeClock) -> None:
    discord = FakeDiscord()
    manager = make_manager(clock, discord)
    for _ in range(3):
        manager.login("good-token")
    assert manager.close_all() == 3
    assert len(discord.released()) == 3
    with pytest.raises(LoginRefused) as refused:
        manager.login("good-token")
    assert refused.value.refusal is Refusal.CLOSED
    assert manager.close_all() == 0


def test_a_failing_release_does_not_keep_the_session(clock: FakeClock) -> None:
    discord = FakeDiscord()
    manager = make_manager(clock, discord)
    session, _ = manager.login("good-token")

    def broken(bot: str) -> None:
        raise RuntimeError("secret-token-text")

    discord.release = broken  # type: ignore[method-assign]
    assert manager.logout(session.id) is True
    assert manager.authenticate(session.id) is None


def test_end_listeners_hear_of_every_ended_session_after_the_discord_service(
    clock: FakeClock,
) -> None:
    discord = FakeDiscord()
    manager = make_manager(clock, discord, idle=60.0)
    heard: list[tuple[str, str, int]] = []
    manager.add_end_listener(
        lambda record, reason: heard.append((record.id, reason, len(discord.released())))
    )

    def broken(record: object, reason: str) -> None:
        raise RuntimeError("a listener's bug")

    manager.add_end_listener(broken)
    out, idle = manager.login("good-token")[0], manager.login("good-token")[0]
    manager.logout(out.id)
    clock.advance(61)
    assert manager.authenticate(idle.id) is None
    assert heard == [(out.id, "logout", 1), (idle.id, "expired", 2)]
