"""The process's live bot connections, by token fingerprint.

Discord caps how often a bot may IDENTIFY, so every session of one bot in
this process shares one :class:`~membersense.discord.connection.BotConnection`.
The pool, not the sessions, owns the connections: it keeps one while the
session store has sessions of its bot (*has_sessions*), and closes it
``CONNECTION_LINGER`` after the last one ended, so that a quick re-login
(a page reload, a client restart) finds it connected, its member lists loaded,
instead of waiting on Discord's 30 s member-request cooldown.

Request threads call :meth:`ConnectionPool.connect` and :meth:`~ConnectionPool.release`;
the linger timers and the closing run on the bridge's loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from membersense.bridge import Bridge, BridgeClosed, BridgeForked
from membersense.discord.connection import RELEASED, SHUTDOWN, BotConnection, State
from membersense.discord.errors import DiscordTimeout, ServiceClosed
from membersense.discord.tokens import fingerprint

__all__ = ["ConnectionPool"]

log = logging.getLogger("membersense.discord")

T = TypeVar("T")

#: Extra time a request thread waits beyond the loop-side bound, so the
#: coroutine's own (more precise) error normally wins the race.
GRACE_S = 1.0


class ConnectionPool:
    """Bot connections of this process (see the module docstring).

    *factory(token)* makes a new connection; *before_new(bot)* runs before one is
    made (it may refuse, e.g. while Discord's invalid-request budget is spent).
    """

    def __init__(
        self,
        bridge: Bridge,
        factory: Callable[[str], BotConnection],
        *,
        has_sessions: Callable[[str], bool],
        linger_s: float,
        before_new: Callable[[str], None] = lambda bot: None,
    ) -> None:
        self._bridge = bridge
        self._factory = factory
        self._has_sessions = has_sessions
        self._before_new = before_new
        self.linger_s = linger_s
        self._lock = threading.Lock()
        self._connections: dict[str, BotConnection] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<ConnectionPool connections={len(self._connections)} closed={self._closed}>"

    def __len__(self) -> int:
        return len(self._connections)

    @property
    def closed(self) -> bool:
        """True once :meth:`close_all` ran: no more connections."""
        return self._closed

    def get(self, bot: str) -> BotConnection | None:
        """The connection of the bot with this fingerprint, if any."""
        return self._connections.get(bot)

    def connect(self, token: str, timeout: float) -> BotConnection:
        """The bot's connection, logged in: joined if live, else made (bounded by *timeout*)."""
        bot = fingerprint(token)
        with self._lock:
            if self._closed:
                raise ServiceClosed()
            connection = self._connections.get(bot)
            if connection is None or connection.state in (
                State.FAILED,
                State.CLOSING,
                State.CLOSED,
            ):
                self._before_new(bot)
                connection = self._factory(token)
                self._connections[bot] = connection
        self.call(connection.login, timeout, timeout=timeout)
        return connection

    def start(self, token: str, timeout: float) -> BotConnection:
        """The bot's connection, its login started but not awaited (Redis mode's takeover)."""
        bot = fingerprint(token)
        with self._lock:
            if self._closed:
                raise ServiceClosed()
            connection = self._connections.get(bot)
            if connection is None or connection.state in (
                State.FAILED,
                State.CLOSING,
                State.CLOSED,
            ):
                connection = self._factory(token)
                self._connections[bot] = connection
        try:
            future = self._bridge.submit(connection.login, timeout)
        except (BridgeClosed, BridgeForked):
            raise ServiceClosed() from None
        future.add_done_callback(_log_failed_login)
        return connection

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, timeout: float) -> T:
        """:meth:`Bridge.call` with the bridge's own failures as Discord-layer errors."""
        try:
            return self._bridge.call(fn, *args, timeout=timeout + GRACE_S)
        except TimeoutError:
            raise DiscordTimeout() from None
        except (BridgeClosed, BridgeForked):
            raise ServiceClosed() from None

    def release(self, bot: str) -> None:
        """A session of *bot* ended: once it has none, close its connection after the linger.

        Never blocks: the timer runs on the loop, and checks again when it fires.
        """
        connection = self._connections.get(bot)
        if connection is None or self._has_sessions(bot) or not self._bridge.running:
            return
        loop = self._bridge.loop
        if loop is None:
            return
        delay = 0.0 if connection.state is State.FAILED else self.linger_s
        try:
            loop.call_soon_threadsafe(loop.call_later, delay, self._linger_over, connection)
        except RuntimeError:  # the loop closed meanwhile: shutdown closes everything
            pass

    def _linger_over(self, connection: BotConnection) -> None:
        # On the loop. The connection stays listed while it closes: close_all() then
        # waits for it too, and connect() replaces it.
        if self._has_sessions(connection.fingerprint) or connection.lifecycle.ending:
            return
        if self._connections.get(connection.fingerprint) is not connection:
            return
        log.info(
            "closing an unused bot connection", extra={"fields": {"token": connection.fingerprint}}
        )
        asyncio.get_running_loop().create_task(
            connection.close(RELEASED), name=f"membersense-release-{connection.fingerprint}"
        )

    def closed_connection(self, connection: BotConnection) -> None:
        """A connection finished closing (whatever closed it): forget it."""
        with self._lock:
            if self._connections.get(connection.fingerprint) is connection:
                del self._connections[connection.fingerprint]

    def refuse_new(self) -> None:
        """Make no more connections (shutting down); :meth:`close_all` closes the live ones."""
        with self._lock:
            self._closed = True

    async def close_all(self) -> None:
        """Close every connection (on the loop, as the bridge stops). Idempotent."""
        with self._lock:
            self._closed = True
            connections = list(self._connections.values())
        for connection in connections:
            await connection.close(SHUTDOWN)  # or waits for the close already under way
        if connections:
            log.info("closed bot connections", extra={"fields": {"count": len(connections)}})


def _log_failed_login(future: Any) -> None:
    # A takeover's login nobody waits for: say how it ended, if badly (type only).
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        log.warning("a bot connection could not log in: %s", type(error).__name__)
