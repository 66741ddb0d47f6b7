"""Logging in and out, authenticating requests, and the idle sweeper.

:class:`SessionManager` ties a :class:`~membersense.sessions.store.SessionStore`
to the :class:`~membersense.discord.service.DiscordService`: a login opens a
pending session (so the caps hold while the bot connects), connects the bot,
then activates the session with the bot's guilds; every session that ends,
however it ends, is reported to the Discord service, which disconnects a bot
once it has no session left, then to whoever else listens (event streams and
webhook subscriptions end with their session).

Idle sessions expire after ``SESSION_TIMEOUT``: lazily when a request finds
one, and in bulk from a sweeper thread every ``CLEANUP_INTERVAL``. The sweeper
also ends the sessions of bots that can no longer be served (a revoked token).
It starts with the first login, in the serving process, never at import.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from nanoid import generate

from membersense.discord.service import BotLogin, DiscordService
from membersense.discord.tokens import fingerprint
from membersense.sessions.store import (
    ENDED_ELSEWHERE,
    ID_LENGTH,
    Caps,
    EndListener,
    Refusal,
    SessionRecord,
    SessionStore,
)

__all__ = ["LoginRefused", "SessionManager"]

log = logging.getLogger("membersense.sessions")


class LoginRefused(Exception):
    """A login was refused before it reached Discord: a cap, or shutdown (*refusal* says which)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


class SessionManager:
    """Sessions over a store and the Discord service (see the module docstring).

    *cleanup_interval* is the sweeper's period in seconds. *seal*, when
    given, encrypts the token kept with each session (Redis mode: any process
    may have to act for any session).
    """

    def __init__(
        self,
        store: SessionStore,
        discord: DiscordService,
        *,
        caps: Caps,
        cleanup_interval: float,
        seal: Callable[[str], str] | None = None,
    ) -> None:
        self.store = store
        self.discord = discord
        self.caps = caps
        self._seal = seal
        self.cleanup_interval = cleanup_interval
        self._sweeper: _Sweeper | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._end_listeners: tuple[EndListener, ...] = ()
        store.set_end_listener(self._ended)

    def __repr__(self) -> str:
        return f"<SessionManager {self.store!r}>"

    def add_end_listener(self, listener: EndListener) -> None:
        """Also report every ended session to *listener(record, reason)*, after the Discord
        service was told; on whatever thread ended it. It must not block: event streams
        and webhook subscriptions of the session end through this."""
        with self._lock:
            self._end_listeners = (*self._end_listeners, listener)

    def login(self, token: str, client: str | None = None) -> tuple[SessionRecord, BotLogin]:
        """Log *token* in for a new session; the session and the bot's guilds.

        Raises :class:`LoginRefused` when a cap is reached or the server is
        closing, and the Discord service's errors.
        """
        pending = SessionRecord(
            id=generate(size=ID_LENGTH),
            fingerprint=fingerprint(token),
            guild_ids=(),
            created_at=time.time(),
            last_activity=0.0,
            client=client,
            sealed_token=self._seal(token) if self._seal else None,
        )
        refusal = self.store.open(pending, self.caps)
        if refusal is not None:
            raise LoginRefused(refusal)
        try:
            bot = self.discord.login(token)
            record = self.store.activate(pending.id, tuple(g.id for g in bot.guilds))
        except BaseException:
            self.store.close(pending.id, reason="login failed")
            raise
        if record is None:  # closed while logging in: the server is shutting down
            raise LoginRefused(Refusal.CLOSED)
        self._start_sweeper()
        log.info(
            "session opened",
            extra={"fields": {"session": record.short_id, "token": record.fingerprint}},
        )
        return record, bot

    def authenticate(self, session_id: str) -> SessionRecord | None:
        """The live session with this id, or None (unknown, expired, or its bot is gone)."""
        record = self.store.get(session_id)
        if record is None:
            return None
        if self.discord.check(record.fingerprint) is not None:
            self.store.close(record.id, reason="bot disconnected")
            return None
        return record

    def logout(self, session_id: str) -> bool:
        """End a session; False if there was none."""
        return self.store.close(session_id, reason="logout") is not None

    def sweep(self) -> int:
        """End idle sessions and those of bots that are gone; return how many."""
        ended = len(self.store.expire())
        for bot in self.store.fingerprints():
            if self.discord.check(bot) is not None:
                ended += len(self.store.close_for(bot, reason="bot disconnected"))
        return ended

    def refuse_new(self) -> None:
        """Refuse logins from now on (shutting down); open sessions carry on."""
        self.store.refuse_new()

    def close_all(self) -> int:
        """Stop the sweeper and end every session (shutdown). Idempotent."""
        with self._lock:
            self._closed = True
            sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.stop()
        # Logins under way are cut short too; only logged-in sessions count as closed.
        closed = sum(not record.pending for record in self.store.shutdown())
        if closed:
            log.info("closed sessions at shutdown", extra={"fields": {"count": closed}})
        return closed

    def _ended(self, record: SessionRecord, reason: str) -> None:
        # Called by the store, on whatever thread removed the session (in Redis mode also
        # for one another process ended: that one logged it).
        if not record.pending and reason != ENDED_ELSEWHERE:
            log.info(
                "session closed", extra={"fields": {"session": record.short_id, "reason": reason}}
            )
        try:
            self.discord.release(record.fingerprint)
        except Exception as exc:  # the session is gone either way; say what failed
            log.warning(
                "releasing a bot failed: %s",
                type(exc).__name__,
                extra={"fields": {"token": record.fingerprint}},
            )
        for listener in self._end_listeners:
            try:
                listener(record, reason)
            except Exception as exc:  # one listener's failure must not stop the others
                log.warning(
                    "a session end listener failed: %s",
                    type(exc).__name__,
                    extra={"fields": {"session": record.short_id}},
                )

    def _start_sweeper(self) -> None:
        with self._lock:
            if self._sweeper is not None or self._closed:
                return
            self._sweeper = _Sweeper(self)
        self._sweeper.start()


class _Sweeper(threading.Thread):
    """Runs :meth:`SessionManager.sweep` every ``cleanup_interval`` seconds until stopped."""

    def __init__(self, manager: SessionManager) -> None:
        super().__init__(name="membersense-session-sweeper", daemon=True)
        self._manager = manager
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._manager.cleanup_interval):
            try:
                ended = self._manager.sweep()
            except Exception as exc:  # keep sweeping whatever one close did
                log.error("session sweep failed: %s", type(exc).__name__)
                continue
            if ended:
                log.info("expired idle sessions", extra={"fields": {"count": ended}})

    def stop(self) -> None:
        self._stop_event.set()
        if self is not threading.current_thread():
            self.join(timeout=5)
