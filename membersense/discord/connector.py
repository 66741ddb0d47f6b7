"""The discord.py implementation of :class:`~membersense.discord.service.DiscordConnector`.

:class:`BridgeConnector` keeps one :class:`~membersense.discord.bot.BotConnection`
(one gateway connection) per bot token in this process: a second login with
the same token shares it, because Discord caps how many times a bot may
IDENTIFY per day. Each login gets its own :class:`BotSession`; the last one
to close (logout, expiry, shutdown) closes the connection.

Reads of the member list are served from an immutable snapshot without
touching the event loop; everything else is a bounded :meth:`Bridge.call`.

The connector also keeps this process out of Discord's invalid-request ban
(:mod:`membersense.discord.guard`): tokens Discord refused are answered 401
locally for a while, and calls to Discord's REST API are held back (503) once
too many of its answers were 401/403/429.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from membersense.config import Settings
from membersense.discord.bot import BotConnection
from membersense.discord.bridge import Bridge, BridgeClosed, BridgeForked
from membersense.discord.failures import fresh_copy
from membersense.discord.guard import FailedTokens, InvalidRequestBudget
from membersense.discord.member_cache import GuildCache, MemberSnapshot, build_snapshot
from membersense.discord.serializers import serialize_message
from membersense.discord.service import ChannelKind, GuildSummary, JsonDocument
from membersense.errors import (
    ApiError,
    DiscordTimeout,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)

__all__ = ["BridgeConnector", "BotSession"]

log = logging.getLogger("membersense.discord")

T = TypeVar("T")

#: Extra time a request thread waits beyond the loop-side bound, so the
#: coroutine's own (more precise) error normally wins the race.
_GRACE_S = 1.0
#: Bound on closing one bot connection (the loop may be busy, Discord slow).
CLOSE_TIMEOUT_S = 5.0


class BridgeConnector:
    """Logs bot tokens in with discord.py on one shared event-loop thread."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.bridge = Bridge()
        #: Discord's 401/403/429 answers to this process; spent, it holds calls back.
        self.invalid_requests = InvalidRequestBudget(settings.discord_invalid_request_limit,
                                                     clock=clock)
        #: Tokens Discord refused lately, answered 401 without asking again.
        self.failed_tokens = FailedTokens(clock=clock)
        self.bridge.add_stop_hook(self._close_all_bots)
        self._lock = threading.Lock()
        self._bots: dict[str, BotConnection] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<BridgeConnector bots={len(self._bots)} closed={self._closed}>"

    def connect(self, token: str) -> BotSession:
        """Log *token* in (or join its live connection) and return a new session.

        A token Discord refused lately is answered 401 without asking again; a
        login that needs Discord is refused (503) while the invalid-request
        budget is spent. Joining a live connection needs neither.
        """
        self.failed_tokens.check(token)
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("Server is shutting down")
            bot = self._bots.get(token)
            if bot is None or bot.failure is not None or bot.closed:
                self.invalid_requests.check()
                bot = BotConnection(token, self.settings, self.invalid_requests)
                self._bots[token] = bot
            bot.refs += 1
        try:
            self.call(bot.ensure_started, timeout=self.settings.login_timeout_s)
        except BaseException as exc:
            if isinstance(exc, Unauthorized):
                self.failed_tokens.add(token)
            self.release(bot)
            raise
        return BotSession(bot, self)

    def release(self, bot: BotConnection) -> None:
        """One session let go of *bot*; the last one closes it."""
        with self._lock:
            bot.refs -= 1
            if bot.refs > 0:
                return
            if self._bots.get(bot._token) is bot:
                del self._bots[bot._token]
        if bot.closed:  # closed already (the bridge stopped first, at interpreter exit)
            return
        try:
            self.call(bot.close, timeout=CLOSE_TIMEOUT_S)
        except Exception as exc:  # the session ends either way; say what went wrong
            log.warning("closing a bot connection failed: %s", type(exc).__name__,
                        extra={"fields": {"token": bot.fingerprint}})

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float) -> T:
        """:meth:`Bridge.call` with the bridge's own failures as API errors."""
        try:
            return self.bridge.call(fn, *args, timeout=timeout + _GRACE_S)
        except TimeoutError:
            raise DiscordTimeout() from None
        except (BridgeClosed, BridgeForked):
            raise ServiceUnavailable("Server is shutting down") from None

    def close(self) -> None:
        """Close every bot connection and stop the bridge. Idempotent."""
        with self._lock:
            self._closed = True
        self.bridge.stop()

    async def _close_all_bots(self) -> None:
        # Runs on the loop as the bridge stops (shutdown, or interpreter exit).
        with self._lock:
            self._closed = True
            bots = list(self._bots.values())
            self._bots.clear()
        for bot in bots:
            await bot.close()
        if bots:
            log.info("closed bot connections", extra={"fields": {"count": len(bots)}})


class BotSession:
    """One login's view of a shared :class:`BotConnection` (a ``DiscordService``)."""

    def __init__(self, bot: BotConnection, connector: BridgeConnector) -> None:
        self._bot = bot
        self._connector = connector
        self._closed = False
        self._close_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<BotSession token={self._bot.fingerprint} closed={self._closed}>"

    def _live_bot(self) -> BotConnection:
        bot = self._bot
        if self._closed or bot.closed:
            raise ServiceUnavailable("This session's Discord connection is closed")
        if bot.failure is not None:
            raise fresh_copy(bot.failure)
        return bot

    @property
    def failed(self) -> bool:
        """True once the shared connection ended for good (revoked token, final close code)."""
        return self._bot.failure is not None or self._bot.closed

    def guilds(self) -> list[GuildSummary]:
        """The bot's guilds, the login's guild first."""
        return list(self._live_bot().summaries)

    def members(self, guild_id: int | None, *, limit: int | None = None,
                after: int | None = None) -> JsonDocument:
        """The guild's members from the snapshot, rebuilt only after a change."""
        bot = self._live_bot()
        cache = bot.caches.get(guild_id if guild_id is not None else bot.default_guild_id or 0)
        if cache is None:
            raise NotFound("Guild not found")
        snapshot = cache.fresh_snapshot() or self._rebuild(bot, cache)
        if limit is None and after is None:
            return snapshot.document
        return snapshot.page(limit, after)

    def _rebuild(self, bot: BotConnection, cache: GuildCache) -> MemberSnapshot:
        # Single flight: one thread copies and serializes, the others wait for it.
        # No lock is held while calling the bridge.
        with cache.lock:
            snapshot = cache.fresh_snapshot()
            if snapshot is not None:
                return snapshot
            pending, owner = cache.rebuilding, cache.rebuilding is None
            if owner:
                pending = cache.rebuilding = Future()
            stale = cache.snapshot
        assert pending is not None
        timeout = self._connector.settings.discord_timeout_s
        if not owner:
            try:
                return pending.result(timeout + _GRACE_S)
            except TimeoutError:
                raise DiscordTimeout() from None
            except ApiError as exc:  # the owner's failure: raised by the owner thread too
                raise fresh_copy(exc) from None
        try:
            data = self._connector.call(bot.member_data, cache.guild_id, stale is None,
                                        timeout=timeout)
            snapshot = build_snapshot(data) if data is not None else stale
            assert snapshot is not None
        except BaseException as exc:
            with cache.lock:
                cache.rebuilding = None
            pending.set_exception(exc)
            raise
        with cache.lock:
            cache.rebuilding = None
            if cache.snapshot is None or cache.snapshot.version <= snapshot.version:
                cache.snapshot = snapshot
        pending.set_result(snapshot)
        return snapshot

    def channels(self, guild_id: int | None, *, kind: ChannelKind = "text") -> list[dict[str, Any]]:
        """The guild's channels of *kind*, from the gateway-maintained cache."""
        bot = self._live_bot()
        return self._connector.call(bot.channels, guild_id, kind,
                                    timeout=self._connector.settings.discord_timeout_s)

    def messages(self, guild_id: int | None, channel_id: int, *, limit: int = 100,
                 before: int | None = None, after: int | None = None,
                 around: int | None = None) -> list[dict[str, Any]]:
        """Up to *limit* messages of the channel, newest first, fetched from Discord."""
        bot = self._live_bot()
        self._connector.invalid_requests.check()  # a REST call: not while the budget is spent
        payloads = self._connector.call(bot.messages, guild_id, channel_id, limit, before, after,
                                        around, timeout=self._connector.settings.discord_timeout_s)
        messages = [serialize_message(p) for p in payloads]
        messages.sort(key=lambda m: int(m["id"]), reverse=True)
        return messages

    def close(self) -> None:
        """Release this session's hold on the connection. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._connector.release(self._bot)
