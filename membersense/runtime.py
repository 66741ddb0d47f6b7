"""The runtime: everything one app runs, and the one place that stops it.

A :class:`Runtime` owns the session store and its manager (with the idle
sweeper), the Discord service (the loop thread, bot connections, snapshot
builder), the event bus and what clients read it through (event streams,
outgoing webhooks). Nothing starts when it is built: threads start
with the first login, in the serving process. :meth:`Runtime.close` stops
everything in a stated order, once, whoever calls it first: the server's
shutdown hook (gunicorn's, see :mod:`membersense.serving`) or ``atexit``
where the server offers nothing better (uWSGI, mod_wsgi; see ``wsgi.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Flask

from membersense.bridge import Bridge
from membersense.bus import EventBus, MemoryEventBus
from membersense.config import Settings
from membersense.discord.service import DiscordService
from membersense.events.live import LiveEvents
from membersense.events.tickets import MemoryTicketStore
from membersense.sessions import Caps, MemorySessionStore, SessionManager
from membersense.webhooks.memory import MemorySubscriptionStore
from membersense.webhooks.service import Webhooks

__all__ = ["Runtime", "runtime_of"]

log = logging.getLogger("membersense")

#: A pending session (a login under way) expires this long after LOGIN_TIMEOUT,
#: should its process die mid-login.
PENDING_GRACE_S = 30.0

_KEY = "membersense.runtime"


class Runtime:
    """What one app runs (see the module docstring).

    *discord* replaces the discord.py service (HTTP-layer tests pass a fake);
    *clock* is the monotonic clock of the session store and of the Discord
    service's guards (tests move it to expire sessions without sleeping).
    """

    def __init__(self, settings: Settings, *, discord: DiscordService | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.bus: EventBus = MemoryEventBus(settings.event_buffer_size)
        clock = clock or time.monotonic
        bridge: Bridge | None = None  # the loop webhooks are delivered on
        self.store = MemorySessionStore(idle_timeout=settings.session_timeout_s,
                                        pending_timeout=settings.login_timeout_s + PENDING_GRACE_S,
                                        clock=clock)
        if discord is None:
            from membersense.discord.local import LocalDiscord  # imports discord.py

            discord = LocalDiscord(settings, self.bus,
                                   has_sessions=lambda bot: self.store.count_for(bot) > 0,
                                   clock=clock)
            bridge = discord.bridge
        self.discord = discord
        self.sessions = SessionManager(
            self.store, discord,
            caps=Caps(settings.max_concurrent_users, settings.max_sessions_per_token,
                      settings.max_sessions_per_ip),
            cleanup_interval=settings.cleanup_interval_s)
        #: Event streams and long-polls, ended with their session.
        self.live = LiveEvents(self.bus, MemoryTicketStore(clock=clock),
                               cap=settings.event_stream_cap,
                               max_stream_s=settings.event_stream_max_seconds)
        self.sessions.add_end_listener(self.live.session_ended)
        #: Outgoing webhooks, delivered on the Discord service's loop; they end with their
        #: session too.
        self.webhooks = Webhooks(settings, self.bus, MemorySubscriptionStore(), bridge=bridge,
                                 touch=self.store.get)
        self.sessions.add_end_listener(self.webhooks.session_ended)
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"<Runtime {'closed' if self.closed else 'open'} {self.sessions!r}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` finished."""
        return self._closed.is_set()

    def refuse_new(self) -> None:
        """Refuse logins from now on (shutting down); everything else carries on."""
        self.sessions.refuse_new()

    def wait_closed(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for :meth:`close` to finish; whether it did."""
        return self._closed.wait(timeout)

    def close(self) -> None:
        """Stop everything, in order; idempotent and safe at interpreter exit.

        Event streams end, logins are refused, every session ends (the sweeper
        stops, webhook subscriptions end), webhooks take no more events, the
        Discord service closes every bot connection, then its loop thread (and
        the webhook deliveries on it) and builder, and the bus wakes whoever
        still waits on it.
        """
        with self._lock:
            if self._closed.is_set():
                return
            try:
                self.live.close()
                self.sessions.close_all()
                self.webhooks.close()
                self.discord.close()
                self.bus.close()
            finally:
                self._closed.set()


def init_app(app: Flask, runtime: Runtime) -> None:
    """Give *app* its runtime."""
    app.extensions[_KEY] = runtime


def runtime_of(app: Flask) -> Runtime:
    """The runtime of *app* (KeyError for an app create_app did not build)."""
    return app.extensions[_KEY]
