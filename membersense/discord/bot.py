"""One bot's discord.py client on the bridge's loop: login, gateway, member cache.

A :class:`BotConnection` owns one ``discord.Client`` for one token and
everything MemberSense keeps about it. All its coroutines run on the bridge's
event loop; the only things request threads read directly are immutable or
atomically replaced: :attr:`BotConnection.summaries`, the per-guild
:class:`~membersense.discord.member_cache.GuildCache` objects and their
snapshots, and :attr:`BotConnection.failure`.

Login (:meth:`BotConnection.start`), bounded by ``LOGIN_TIMEOUT``:

1. REST: ``GET /users/@me`` (a bad token is a fast 401, no gateway) and the
   application, whose flags say whether the privileged intents we need were
   granted (if not: 400 naming them, before spending an IDENTIFY); then
   ``GET /gateway/bot`` for the session start budget and, unless
   ``DISCORD_GATEWAY_URL`` is set, the gateway URL.
2. Gateway: ``client.connect(reconnect=True)`` as a task. discord.py resumes
   after drops and never retries close codes 4004, 4013 and 4014.
3. Wait for READY, for every guild's GUILD_CREATE and for its members. We
   chunk guilds ourselves (``chunk_guilds_at_startup=False``) as soon as each
   guild arrives, instead of discord.py's start-up chunking, which holds
   ``on_ready`` back by ``guild_ready_timeout`` and gives up silently when
   Discord answers the request with a ``RATE_LIMITED`` event.

After that, gateway events keep discord.py's cache current, and each event
that changes a member list bumps that guild's cache version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import discord
from discord.state import ConnectionState

from membersense import metrics
from membersense.config import Settings
from membersense.discord import endpoints
from membersense.discord.failures import (
    api_error,
    bounded,
    fresh_copy,
    http_trace,
    missing_intents_error,
)
from membersense.discord.guard import InvalidRequestBudget
from membersense.discord.member_cache import GuildCache, MemberData
from membersense.discord.serializers import (
    channel_kind_matches,
    guild_icon_url,
    member_record,
    role_record,
    serialize_channel,
)
from membersense.discord.service import GuildSummary
from membersense.errors import (
    ApiError,
    BadRequest,
    DiscordTimeout,
    DiscordUnavailable,
    Forbidden,
    NotFound,
    ServiceUnavailable,
)
from membersense.sessions import fingerprint

__all__ = ["INTENTS", "BotConnection"]

log = logging.getLogger("membersense.discord")

#: What MemberSense reads: guilds, members (privileged), guild messages and their content
#: (privileged).
INTENTS = discord.Intents.none()
INTENTS.guilds = True
INTENTS.members = True
INTENTS.guild_messages = True
INTENTS.message_content = True

#: How long one member request may go unanswered before it is sent again.
CHUNK_RETRY_S = 30.0
#: The gateway answers an "all members" request with at most 1000 members per chunk.
_GATEWAY_OPCODE_REQUEST_MEMBERS = 8

# Events after which a guild's member list looks different, and how to find the guild.
_MEMBER_LIST_EVENTS: dict[str, Callable[..., int]] = {
    "member_join": lambda member: member.guild.id,
    "member_update": lambda before, after: after.guild.id,
    "raw_member_remove": lambda payload: payload.guild_id,
    "guild_role_create": lambda role: role.guild.id,
    "guild_role_delete": lambda role: role.guild.id,
    "guild_role_update": lambda before, after: after.guild.id,
}
# Events after which the login answer's guild list (names, counts, icons) changes; it
# leaves out unavailable guilds (an outage), so their coming and going counts too.
_SUMMARY_EVENTS = frozenset({"member_join", "raw_member_remove", "guild_update", "guild_join",
                             "guild_remove", "guild_available", "guild_unavailable"})


class _State(ConnectionState):  # type: ignore[type-arg]
    """discord.py's connection state, plus the RATE_LIMITED event it does not parse (yet)."""

    def parse_rate_limited(self, data: dict[str, Any]) -> None:
        self.dispatch("gateway_rate_limited", data)


class _Client(discord.Client):
    """A discord.Client that reports its events to its :class:`BotConnection`."""

    def __init__(self, connection: BotConnection, **options: Any) -> None:
        self._membersense = connection
        super().__init__(**options)

    def _get_state(self, **options: Any) -> ConnectionState:  # type: ignore[type-arg]
        return _State(dispatch=self.dispatch, handlers=self._handlers, hooks=self._hooks,
                      http=self.http, **options)

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        super().dispatch(event, *args, **kwargs)
        self._membersense._on_dispatch(event, args)


class BotConnection:
    """One token's gateway connection, shared by every session logged in with it.

    Created on any thread; every coroutine method runs on the bridge's loop.
    The token is kept for discord.py only: never logged, never in the repr.
    """

    def __init__(self, token: str, settings: Settings,
                 invalid_requests: InvalidRequestBudget) -> None:
        self._token = token
        self.fingerprint = fingerprint(token)
        self._settings = settings
        self._invalid_requests = invalid_requests  # every Discord answer is reported to it
        #: Sessions using this connection (the connector's lock guards it).
        self.refs = 0
        #: Per-guild member caches, by guild id (replaced, never mutated, off the loop).
        self.caches: dict[int, GuildCache] = {}
        #: The login answer's guilds, default guild first.
        self.summaries: tuple[GuildSummary, ...] = ()
        self.default_guild_id: int | None = None
        #: Set when the connection ended for good (after a successful login).
        self.failure: ApiError | None = None
        self.closed = False
        self._client: _Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._session_epoch = 0  # bumped on every READY: discord.py drops its cache then
        self._ready_seen = False
        self._gateway_error: BaseException | None = None
        self._gateway_done = False
        self._rate_limit_waiters: dict[int, asyncio.Future[float]] = {}
        self._endpoints_held = False

    def __repr__(self) -> str:
        return f"<BotConnection token={self.fingerprint} refs={self.refs} closed={self.closed}>"

    # -- lifecycle (loop) ----------------------------------------------------

    async def ensure_started(self) -> None:
        """Log in once; later callers wait for the same login and share its outcome."""
        if self._start_task is None:
            self._start_task = asyncio.create_task(self._start(), name="membersense-login")
        try:
            await asyncio.shield(self._start_task)
        except ApiError as exc:
            raise fresh_copy(exc) from None  # one outcome, many waiters

    async def _start(self) -> None:
        if self.closed:  # closed before the login task first ran: start nothing
            raise ServiceUnavailable("The Discord connection is closed")
        settings = self._settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.login_timeout_s
        self._changed = asyncio.Event()
        endpoints.use_endpoints(settings)
        self._endpoints_held = True
        client = self._client = _Client(
            self,
            intents=INTENTS,
            chunk_guilds_at_startup=False,
            max_messages=None,  # messages are read over REST; no message cache
            http_trace=http_trace(self._invalid_requests),
            enable_debug_events=False,
        )
        # discord.py will not sleep less than 30 s on a rate limit before raising
        # RateLimited; a request may only take DISCORD_TIMEOUT, so raise (→ 503) past that.
        client.http.max_ratelimit_timeout = settings.discord_timeout_s
        try:
            await bounded(self._login(client), deadline - loop.time())
            self._runner = asyncio.create_task(self._run_gateway(client),
                                               name=f"membersense-gateway-{self.fingerprint}")
            await bounded(self._wait_for(lambda: self._ready_seen), deadline - loop.time())
            if not client.guilds:
                raise BadRequest("The bot is not in any server: invite it to a server first")
            self.default_guild_id = client.guilds[0].id
            waiting = [self._cache(guild.id) for guild in client.guilds]
            await bounded(self._wait_for(lambda: self._members_loaded(waiting, deadline)),
                          deadline - loop.time())
            self._refresh_summaries()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, DiscordTimeout):
                raise DiscordTimeout("Discord did not finish the login in time") from None
            if isinstance(exc, (ApiError, asyncio.CancelledError)):
                raise
            raise api_error(exc) from None
        log.info("bot connected", extra={"fields": {
            "token": self.fingerprint, "guilds": len(client.guilds),
            "members": sum(g.member_count or 0 for g in client.guilds)}})

    async def _login(self, client: _Client) -> None:
        await client.login(self._token)
        flags = client.application.flags if client.application else None
        if flags is not None:
            missing = []
            if not (flags.gateway_guild_members or flags.gateway_guild_members_limited):
                missing.append("Server Members Intent")
            if not (flags.gateway_message_content or flags.gateway_message_content_limited):
                missing.append("Message Content Intent")
            if missing:
                raise missing_intents_error(missing)
        _, gateway_url, budget = await client.http.get_bot_gateway()
        endpoints.use_discovered_gateway(gateway_url)
        if budget and budget.get("remaining", 1) <= 0:
            raise ServiceUnavailable(
                "The bot has used up its daily gateway logins; try again later",
                retry_after=budget.get("reset_after", 0) / 1000,
            )

    async def _run_gateway(self, client: _Client) -> None:
        try:
            await client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # final close codes (4004/4013/4014) and the like
            self._gateway_error = exc
            log.warning("gateway connection ended: %s", type(exc).__name__,
                        extra={"fields": {"token": self.fingerprint,
                                          "code": getattr(exc, "code", None)}})
        finally:
            self._gateway_done = True
            if self._ready_seen and self.failure is None and not self.closed:
                error = self._gateway_error
                self.failure = (api_error(error) if error is not None
                                else DiscordUnavailable("The connection to Discord was closed"))
            self._notify()
            if not client.is_closed():
                await client.close()

    async def close(self) -> None:
        """Close the client and wait for its tasks; idempotent.

        The work runs once, in a task of its own that callers await through a
        shield (as ``discord.Client.close`` keeps one closing task): a caller
        cancelled midway (the connector bounds each release) does not cut the
        cleanup short, and every later call waits for that same task instead of
        returning before it is done.
        """
        if self._closing is None:
            self.closed = True
            self._closing = asyncio.create_task(
                self._close(requested_by=asyncio.current_task()),
                name=f"membersense-close-{self.fingerprint}")
        await asyncio.shield(self._closing)

    async def _close(self, requested_by: asyncio.Task[Any] | None) -> None:
        client, runner, start = self._client, self._runner, self._start_task
        # A login still under way would go on to open a gateway nobody closes. Unless
        # the login itself asked (it closes what it started when it fails), cancel it;
        # it awaits this task on its way out, so it is not awaited here.
        if start is not None and start is not requested_by and not start.done():
            start.cancel()
        for cache in self.caches.values():
            if cache.chunk_task is not None:
                cache.chunk_task.cancel()
        for waiter in self._rate_limit_waiters.values():
            waiter.cancel()
        try:
            if client is not None:
                await client.close()
        except Exception as exc:  # closing must finish whatever the socket did
            log.warning("closing a Discord client failed: %s", type(exc).__name__)
        if runner is not None and not runner.done():
            runner.cancel()
        # discord.py's close() leaves the task that holds on_ready back (it waits
        # guild_ready_timeout after the last GUILD_CREATE) running; we never use on_ready.
        ready_task = getattr(client._connection, "_ready_task", None) if client else None
        if ready_task is not None:
            ready_task.cancel()
        pending = [t for t in [runner, ready_task, *(c.chunk_task for c in self.caches.values())]
                   if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=5)
        if self._endpoints_held:
            self._endpoints_held = False
            endpoints.release_endpoints()
        metrics.gateway_event(self, "close")
        self._notify()

    # -- waiting (loop) --------------------------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until *predicate* holds; it may raise to end the wait. Callers bound it."""
        while True:
            changed = self._changed
            self._check_alive()
            if predicate():
                return
            assert changed is not None
            await changed.wait()

    def _check_alive(self) -> None:
        if self.failure is not None:
            raise fresh_copy(self.failure)
        if self._gateway_done:
            error = self._gateway_error
            raise api_error(error) if error is not None else DiscordUnavailable(
                "The connection to Discord was closed")
        if self.closed:
            raise ServiceUnavailable("The Discord connection is closed")

    def _members_loaded(self, caches: list[GuildCache], deadline: float) -> bool:
        now = asyncio.get_running_loop().time()
        for cache in caches:
            if cache.retry_at is not None and cache.retry_at > deadline:
                raise ServiceUnavailable(
                    "Discord is rate limiting member requests for this bot; try again later",
                    retry_after=cache.retry_at - now)
        return all(cache.complete for cache in caches)

    # -- gateway events (loop) ------------------------------------------------------

    def _on_dispatch(self, event: str, args: tuple[Any, ...]) -> None:
        """Every event discord.py dispatches, synchronously, after it updated its cache."""
        metrics.gateway_event(self, event)
        if event == "socket_event_type":
            # Sent before discord.py parses the payload; look once parsing is done.
            if args[0] == "GUILD_CREATE":
                asyncio.get_running_loop().call_soon(self._start_chunking)
            return
        if event == "connect":  # READY parsed: a new session, discord.py's cache was reset
            self._on_ready()
            return
        if event == "gateway_rate_limited":
            self._on_rate_limited(args[0])
            return
        if event in ("resumed", "disconnect"):
            log.info("gateway %s", event, extra={"fields": {"token": self.fingerprint}})
            return
        guild_of = _MEMBER_LIST_EVENTS.get(event)
        if guild_of is not None:
            cache = self.caches.get(guild_of(*args))
            if cache is not None:
                cache.invalidate()
        elif event == "user_update":  # a user's name or avatar: every guild may show it
            for cache in self.caches.values():
                cache.invalidate()
        if event == "guild_remove":
            self.caches = {k: v for k, v in self.caches.items() if k != args[0].id}
        if event in _SUMMARY_EVENTS and self._ready_seen:
            self._refresh_summaries()

    def _on_ready(self) -> None:
        self._session_epoch += 1
        client = self._client
        assert client is not None
        for cache in self.caches.values():
            cache.complete = False
            cache.retry_at = None
            if cache.chunk_task is not None:
                cache.chunk_task.cancel()
                cache.chunk_task = None
        for guild in client.guilds:
            self._cache(guild.id)
        if self._ready_seen:
            log.info("gateway session restarted; reloading members",
                     extra={"fields": {"token": self.fingerprint}})
        self._ready_seen = True
        self._notify()

    def _cache(self, guild_id: int) -> GuildCache:
        cache = self.caches.get(guild_id)
        if cache is None:
            # Replace the dict so request threads iterating it never see it change size.
            cache = GuildCache(guild_id)
            self.caches = {**self.caches, guild_id: cache}
        return cache

    def _start_chunking(self) -> None:
        client = self._client
        if client is None or self.closed:
            return
        for guild in client.guilds:
            if guild.unavailable:
                continue
            cache = self._cache(guild.id)
            if not cache.complete and cache.chunk_task is None:
                cache.chunk_task = asyncio.create_task(
                    self._chunk(cache, self._session_epoch),
                    name=f"membersense-chunk-{guild.id}")
        self._notify()

    def _on_rate_limited(self, data: dict[str, Any]) -> None:
        if data.get("opcode") != _GATEWAY_OPCODE_REQUEST_MEMBERS:
            return
        try:
            guild_id = int(data["meta"]["guild_id"])
            retry_after = float(data["retry_after"])
        except (KeyError, TypeError, ValueError):
            return
        waiter = self._rate_limit_waiters.get(guild_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(retry_after)

    async def _chunk(self, cache: GuildCache, epoch: int) -> None:
        """Request the guild's whole member list until it arrives (once per READY)."""
        loop = asyncio.get_running_loop()
        client = self._client
        assert client is not None
        try:
            while epoch == self._session_epoch and not self.closed:
                guild = client.get_guild(cache.guild_id)
                if guild is None:
                    return
                limited: asyncio.Future[float] = loop.create_future()
                self._rate_limit_waiters[guild.id] = limited
                request = asyncio.ensure_future(guild.chunk(cache=True))
                try:
                    await asyncio.wait({request, limited}, timeout=CHUNK_RETRY_S,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self._rate_limit_waiters.pop(guild.id, None)
                if epoch != self._session_epoch:
                    request.cancel()
                    return
                if request.done() and not request.cancelled() and request.exception() is None:
                    limited.cancel()
                    cache.complete = True
                    cache.retry_at = None
                    cache.invalidate()
                    self._notify()
                    return
                request.cancel()
                # discord.py keeps one pending request per guild and would wait on the
                # unanswered one forever; forget it so the next chunk() asks again.
                client._connection._chunk_requests.pop(guild.id, None)
                delay = 0.0
                if limited.done() and not limited.cancelled():
                    delay = limited.result()
                    cache.retry_at = loop.time() + delay
                    log.info("member request rate limited", extra={"fields": {
                        "token": self.fingerprint, "guild": guild.id, "retry_after": delay}})
                    self._notify()
                else:
                    limited.cancel()
                await asyncio.sleep(delay)
        finally:
            if cache.chunk_task is asyncio.current_task():
                cache.chunk_task = None

    def _refresh_summaries(self) -> None:
        client = self._client
        if client is None:
            return
        guilds = sorted(client.guilds, key=lambda g: g.id != self.default_guild_id)
        self.summaries = tuple(
            GuildSummary(str(g.id), g.name, g.member_count or len(g.members),
                         guild_icon_url(g.id, g.icon.key if g.icon else None))
            for g in guilds if not g.unavailable
        )

    # -- reads (loop) -------------------------------------------------------------

    def _guild(self, guild_id: int | None) -> discord.Guild:
        self._check_alive()
        client = self._client
        assert client is not None
        guild = client.get_guild(guild_id if guild_id is not None else self.default_guild_id)
        if guild is None or guild.unavailable:
            raise NotFound("Guild not found")
        return guild

    async def member_data(self, guild_id: int, wait: bool) -> MemberData | None:
        """Copy the guild's members out of discord.py's cache.

        While the members are (re)loading, wait for them if *wait*, else
        return None (the caller still has an older snapshot to serve).
        """
        guild = self._guild(guild_id)
        cache = self.caches.get(guild.id)
        if cache is None:
            raise NotFound("Guild not found")
        if not cache.complete:
            if not wait:
                return None
            if cache.chunk_task is None:
                self._start_chunking()
            await self._wait_for(lambda: cache.complete)
            guild = self._guild(guild_id)
        # One loop step: the records and the version belong together.
        return MemberData(
            guild_id=guild.id,
            version=cache.version,
            members=[member_record(m) for m in guild.members],
            roles=[role_record(r) for r in guild.roles],
        )

    async def channels(self, guild_id: int | None, kind: str) -> list[dict[str, Any]]:
        """The guild's channels of *kind*, in the order Discord shows them."""
        guild = self._guild(guild_id)
        result = []
        for category, channels in guild.by_category():
            if category is not None and channel_kind_matches(category, kind):
                result.append(serialize_channel(category))
            result.extend(serialize_channel(c) for c in channels if channel_kind_matches(c, kind))
        return result

    async def messages(self, guild_id: int | None, channel_id: int, limit: int,
                       before: int | None, after: int | None,
                       around: int | None) -> list[dict[str, Any]]:
        """Discord's JSON for up to *limit* messages of a channel of the guild."""
        guild = self._guild(guild_id)
        channel = guild.get_channel(channel_id)
        if channel is None:  # unknown, or another guild's: both look the same
            raise NotFound("Channel not found")
        if not isinstance(channel, discord.abc.Messageable):
            raise BadRequest("This channel has no messages")
        permissions = channel.permissions_for(guild.me)
        if not (permissions.view_channel and permissions.read_message_history):
            raise Forbidden("The bot cannot read messages in this channel")
        client = self._client
        assert client is not None
        return await bounded(
            client.http.logs_from(channel_id, limit, before=before, after=after, around=around),
            self._settings.discord_timeout_s,
            not_found="Channel not found",
        )
