"""The session registry: who is logged in, with which Discord service.

A session maps a random id (nanoid, 21 characters) to one bot's
:class:`~membersense.discord.service.DiscordService`. The registry is one dict
behind one lock; anything slow (logging a token in, closing a Discord client)
happens outside it, so a slow Discord never stalls other requests.

Idle sessions expire after ``SESSION_TIMEOUT``: lazily when a request finds
one, and in bulk from a sweeper thread every ``CLEANUP_INTERVAL``. The
sweeper starts with the first session, in the serving process, never at
import time.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app, g, request
from nanoid import generate

from membersense.config import Settings
from membersense.discord.service import DiscordService
from membersense.errors import ServiceUnavailable, Unauthorized

__all__ = ["Session", "SessionRegistry", "Sessions", "fingerprint"]

log = logging.getLogger("membersense.sessions")

Clock = Callable[[], float]

#: nanoid's default alphabet; an Authorization value outside it is never looked up.
_ID_ALPHABET = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
ID_LENGTH = 21


def fingerprint(token: str) -> str:
    """A short, stable, non-reversible name for a token, safe to log and compare."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(eq=False)
class Session:
    """One logged-in client."""

    id: str
    service: DiscordService = field(repr=False)
    token_fingerprint: str
    created_at: float  # wall clock (epoch seconds), for display
    last_activity: float  # registry clock (monotonic seconds)

    @property
    def short_id(self) -> str:
        """The first characters of the id: enough to follow a session in logs."""
        return self.id[:6]


class SessionRegistry:
    """Lock-protected sessions of one app, with idle expiry.

    *clock* is monotonic seconds; tests pass a fake one to expire sessions
    without sleeping.
    """

    def __init__(
        self,
        *,
        max_sessions: int,
        idle_timeout: float,
        cleanup_interval: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.cleanup_interval = cleanup_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._pending = 0  # logins under way: they hold a slot too
        self._sweeper: _Sweeper | None = None
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def open(self, token: str, connect: Callable[[str], DiscordService]) -> Session:
        """Log *token* in through *connect* and register a new session.

        A slot is reserved before the (slow) login, so concurrent logins can
        never exceed ``max_sessions``; it is given back if the login fails.
        """
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("Server is shutting down")
            if len(self._sessions) + self._pending >= self.max_sessions:
                raise ServiceUnavailable("Maximum number of concurrent users reached")
            self._pending += 1
        try:
            service = connect(token)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        now = self._clock()
        session = Session(
            id=generate(size=ID_LENGTH),
            service=service,
            token_fingerprint=fingerprint(token),
            created_at=time.time(),
            last_activity=now,
        )
        with self._lock:
            self._pending -= 1
            closed = self._closed
            if not closed:
                self._sessions[session.id] = session
        if closed:  # shut down while logging in: leave nothing behind
            _close_quietly(session)
            raise ServiceUnavailable("Server is shutting down")
        self._start_sweeper()
        log.info("session opened", extra={"fields": {"session": session.short_id,
                                                      "token": session.token_fingerprint}})
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id, its activity refreshed.

        None if unknown, expired, or its bot's connection has failed for good
        (a revoked token): such a session is ended here, so it neither holds a
        slot nor looks alive to a client that keeps polling it.
        """
        ended: tuple[Session, str] | None = None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            now = self._clock()
            if now - session.last_activity > self.idle_timeout:
                ended = self._sessions.pop(session_id), "expired"
            elif session.service.failed:
                ended = self._sessions.pop(session_id), "failed"
            else:
                session.last_activity = now
        if ended is not None:
            _close_quietly(*ended)
            return None
        return session

    def close(self, session_id: str) -> bool:
        """End a session and close its Discord service. False if there was none."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        _close_quietly(session, reason="logout")
        return True

    def expire_idle(self) -> int:
        """Close every session idle for longer than the timeout, or failed; return how many."""
        with self._lock:
            now = self._clock()
            stale = [s for s in self._sessions.values()
                     if now - s.last_activity > self.idle_timeout or s.service.failed]
            for session in stale:
                del self._sessions[session.id]
        for session in stale:
            _close_quietly(session, reason="expired")
        return len(stale)

    def refuse_new(self) -> None:
        """Refuse logins from now on (shutting down); open sessions carry on."""
        with self._lock:
            self._closed = True

    def close_all(self) -> int:
        """Stop the sweeper and close every session (shutdown). Idempotent."""
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
            sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.stop()
        for session in sessions:
            _close_quietly(session, reason="shutdown")
        return len(sessions)

    def _start_sweeper(self) -> None:
        with self._lock:
            if self._sweeper is not None or self._closed:
                return
            self._sweeper = _Sweeper(self)
        self._sweeper.start()


class _Sweeper(threading.Thread):
    """Expires idle sessions every ``cleanup_interval`` seconds until stopped."""

    def __init__(self, registry: SessionRegistry) -> None:
        super().__init__(name="membersense-session-sweeper", daemon=True)
        self._registry = registry
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._registry.cleanup_interval):
            try:
                expired = self._registry.expire_idle()
            except Exception as exc:  # keep sweeping whatever one close did
                log.error("session sweep failed: %s", type(exc).__name__)
                continue
            if expired:
                log.info("expired idle sessions", extra={"fields": {"count": expired}})

    def stop(self) -> None:
        self._stop_event.set()
        if self is not threading.current_thread():
            self.join(timeout=5)


def _close_quietly(session: Session, reason: str = "closed") -> None:
    try:
        session.service.close()
    except Exception as exc:
        # The session is gone either way; say what failed, never its text.
        log.warning("closing a Discord service failed: %s", type(exc).__name__,
                    extra={"fields": {"session": session.short_id}})
    log.info("session closed", extra={"fields": {"session": session.short_id, "reason": reason}})


def _session_id_from_header(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    if len(value) != ID_LENGTH or not _ID_ALPHABET.issuperset(value):
        return None
    return value


class Sessions:
    """The Flask extension holding each app's :class:`SessionRegistry`."""

    key = "membersense.sessions"

    def init_app(self, app: Flask, settings: Settings, *, clock: Clock | None = None) -> None:
        """Create *app*'s registry from *settings*."""
        app.extensions[self.key] = SessionRegistry(
            max_sessions=settings.max_concurrent_users,
            idle_timeout=settings.session_timeout_s,
            cleanup_interval=settings.cleanup_interval_s,
            clock=clock or time.monotonic,
        )

    @property
    def registry(self) -> SessionRegistry:
        """The current app's registry."""
        return current_app.extensions[self.key]

    def authenticate(self) -> Session:
        """The session named by this request's ``Authorization`` header, or 401.

        Accepts the bare id (what the MemberSense web client sends) and
        ``Bearer <id>``.
        """
        session_id = _session_id_from_header(request.headers.get("Authorization"))
        session = self.registry.get(session_id) if session_id else None
        if session is None:
            raise Unauthorized()
        g.session = session
        return session
