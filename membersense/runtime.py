"""The runtime: everything one app runs, and the one place that stops it.

A :class:`Runtime` owns the session store and its manager (with the idle
sweeper), the Discord service (the loop thread, bot connections, snapshot
builder), the event bus and what clients read it through (event streams,
outgoing webhooks): in this process's memory, or, with ``REDIS_URL`` set, in
Redis (:mod:`membersense.cluster`). Nothing starts when it is built: threads
start with the first request that needs them, in the serving process.
:meth:`Runtime.close` stops everything in a stated order, once, whoever calls
it first: the server's shutdown hook (gunicorn's, see :mod:`membersense.serving`)
or ``atexit`` where the server offers nothing better (uWSGI, mod_wsgi; see
``wsgi.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask

from membersense import metrics
from membersense.bridge import Bridge
from membersense.bus import EventBus, MemoryEventBus
from membersense.config import Settings
from membersense.discord.service import DiscordService
from membersense.events.live import LiveEvents
from membersense.events.tickets import MemoryTicketStore
from membersense.sessions import Caps, MemorySessionStore, SessionManager, SessionStore
from membersense.webhooks.memory import MemorySubscriptionStore
from membersense.webhooks.service import Webhooks

if TYPE_CHECKING:
    from membersense.cluster.wiring import ClusterParts

__all__ = ["IN_FLIGHT_GRACE_S", "Runtime", "runtime_of"]

#: What the Discord service reports to the app's metrics.
_METRICS: dict[str, Any] = {
    "on_answer": metrics.discord_response,
    "on_gateway_event": metrics.gateway_event,
}

log = logging.getLogger("membersense")

_KEY = "membersense.runtime"

#: After a server's stop signal, how long requests in flight may go on before Discord work is
#: cut short (every server's shutdown path waits this long after :meth:`Runtime.refuse_new`).
IN_FLIGHT_GRACE_S = 2.0


class Runtime:
    """What one app runs (see the module docstring).

    *discord* replaces the discord.py service (HTTP-layer tests pass a fake);
    *clock* is the monotonic clock of the session store and of the Discord
    service's guards (tests move it to expire sessions without sleeping).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        discord: DiscordService | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.bus: EventBus
        clock = clock or time.monotonic
        self._cluster: ClusterParts | None = None
        seal: Callable[[str], str] | None = None
        bridge: Bridge | None = None  # the loop webhooks are delivered on
        self.store: SessionStore
        if settings.redis_mode and discord is None:
            from membersense.cluster.wiring import build  # imports redis, cryptography

            self._cluster = build(settings, clock, **_METRICS)
            self.store, self.bus, discord = (
                self._cluster.store,
                self._cluster.bus,
                self._cluster.discord,
            )
            seal = self._cluster.sealer.seal
            bridge = self._cluster.discord.bridge
        else:
            self.bus = MemoryEventBus(settings.event_buffer_size)
            store = MemorySessionStore(
                idle_timeout=settings.session_timeout_s,
                pending_timeout=settings.pending_timeout_s,
                clock=clock,
            )
            self.store = store
            if discord is None:
                from membersense.discord.local import LocalDiscord  # imports discord.py

                discord = LocalDiscord(
                    settings,
                    self.bus,
                    has_sessions=lambda bot: store.count_for(bot) > 0,
                    clock=clock,
                    **_METRICS,
                )
                bridge = (
                    discord.bridge
                )  # (a fake Discord service: webhooks get a loop of their own)
        self.discord = discord
        self.sessions = SessionManager(
            self.store,
            discord,
            caps=Caps(
                settings.max_concurrent_users,
                settings.max_sessions_per_token,
                settings.max_sessions_per_ip,
            ),
            cleanup_interval=settings.cleanup_interval_s,
            seal=seal,
        )
        cluster = self._cluster
        #: Event streams and long-polls, ended with their session.
        self.live = LiveEvents(
            self.bus,
            cluster.tickets if cluster else MemoryTicketStore(clock=clock),
            cap=settings.event_stream_cap,
            max_stream_s=settings.event_stream_max_seconds,
        )
        self.sessions.add_end_listener(self.live.session_ended)
        #: Outgoing webhooks, delivered on the Discord service's loop; they end with their
        #: session too.
        self.webhooks = Webhooks(
            settings,
            self.bus,
            cluster.subscriptions if cluster else MemorySubscriptionStore(),
            bridge=bridge,
            touch=self.store.get,
        )
        self.sessions.add_end_listener(self.webhooks.session_ended)
        if cluster is not None:
            # The process that owns a bot delivers its webhooks, starting with what the
            # last owner had not delivered; one made elsewhere it hears of by a notice.
            subscriptions, webhooks, since = cluster.subscriptions, self.webhooks, cluster.bus.since

            def unowned(bot: str) -> None:
                subscriptions.unmirror(bot)
                webhooks.forget_bot(bot)

            cluster.discord.add_owner_hooks(
                lambda bot: webhooks.resume(subscriptions.mirror(bot), since), unowned
            )
            subscriptions.on_mirrored(webhooks.begin)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._refusing = False
        self._closers: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Runtime {'closed' if self.closed else 'open'} {self.sessions!r}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` finished."""
        return self._closed.is_set()

    def refuse_new(self) -> None:
        """Refuse logins from now on (shutting down); everything else carries on."""
        self._refusing = True
        self.sessions.refuse_new()
        self.discord.refuse_new()

    def on_close(self, callback: Callable[[], None]) -> None:
        """Have :meth:`close` call *callback* (an extension's threads and leftovers), once
        sessions, Discord and the bus are closed and before Redis is let go."""
        self._closers.append(callback)

    def wait_closed(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for :meth:`close` to finish; whether it did."""
        return self._closed.wait(timeout)

    def close(self) -> None:
        """Stop everything, in order; idempotent and safe at interpreter exit.

        Event streams end, logins are refused, every session ends (the sweeper
        stops, webhook subscriptions end), webhooks take no more events, the
        Discord service closes every bot connection, then its loop thread (and
        the webhook deliveries on it) and builder, and the bus wakes whoever
        still waits on it. In Redis mode the sessions stay (other processes serve
        them), this process's leases are released at once, and queued writes are
        flushed before Redis is let go. What extensions asked for (:meth:`on_close`)
        runs before that.
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
                for callback in self._closers:
                    callback()
                if self._cluster is not None:
                    self._cluster.close_after_discord()
            finally:
                self._closed.set()

    def ready(self) -> bool:
        """Whether this process can serve: not stopping, and its shared store reachable."""
        if self._refusing or self.closed:
            return False
        return self._cluster is None or self._cluster.redis.ping()


def init_app(app: Flask, runtime: Runtime) -> None:
    """Give *app* its runtime."""
    app.extensions[_KEY] = runtime


def runtime_of(app: Flask) -> Runtime:
    """The runtime of *app* (KeyError for an app create_app did not build)."""
    return app.extensions[_KEY]
