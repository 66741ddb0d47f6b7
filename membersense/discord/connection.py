"""One bot's gateway connection on the bridge's loop, and what it publishes.

A :class:`BotConnection` owns one discord.py client for one token and puts
together the parts that do the work:

- :class:`~membersense.discord.lifecycle.Lifecycle`: the state machine;
- :class:`~membersense.discord.members.MemberLoader`: the member lists and
  loading them (chunking, ``RATE_LIMITED``);
- :class:`~membersense.discord.translate.EventTranslator`: dispatches → events;
- :class:`~membersense.discord.published.Publisher`: what requests read.

Login (:meth:`BotConnection.login`), bounded by ``LOGIN_TIMEOUT``:

1. REST: ``GET /users/@me`` (a bad token is a fast 401, no gateway), the
   application, whose flags say whether the privileged intents we need were
   granted (if not, say which, before spending an IDENTIFY), and
   ``GET /gateway/bot`` for the daily session budget and, unless
   ``DISCORD_GATEWAY_URL`` is set, the gateway URL.
2. Gateway: ``client.connect(reconnect=True)`` as a task. discord.py resumes
   after drops and never retries close codes 4004, 4013 and 4014.
3. READY and every guild's GUILD_CREATE: the connection is READY. A login
   then also waits for the member lists, unless Discord's member-request
   cooldown applies: then it answers at once and the lists follow.

Every coroutine runs on the bridge's loop. Other threads read only
:attr:`BotConnection.state`, :attr:`BotConnection.failure` and the publisher's
immutable view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import discord
from discord.http import HTTPClient

from membersense.bus import Event, EventBus
from membersense.config import Settings
from membersense.discord import compat
from membersense.discord.errors import (
    BotReleased,
    DailyLoginsUsed,
    DiscordError,
    DiscordTimeout,
    DiscordUnavailable,
    MissingIntents,
    NoGuilds,
    ServiceClosed,
)
from membersense.discord.lifecycle import Lifecycle, State
from membersense.discord.members import GuildMembers, MemberLoader
from membersense.discord.published import BotView, Publisher, guild_summary
from membersense.discord.rest import (
    PRIVILEGED_INTENTS,
    RestOperations,
    bounded,
    error_from,
    http_trace,
)
from membersense.discord.tokens import fingerprint
from membersense.discord.translate import EventTranslator

__all__ = ["INTENTS", "BotConnection", "State"]

log = logging.getLogger("membersense.discord")

#: What MemberSense reads: guilds, members (privileged), guild messages and their
#: content (privileged).
INTENTS = discord.Intents.none()
INTENTS.guilds = True
INTENTS.members = True
INTENTS.guild_messages = True
INTENTS.message_content = True

#: Why a connection closed, as :meth:`BotConnection.close` is told.
RELEASED = "released"  # its last session ended
SHUTDOWN = "shutdown"  # MemberSense is stopping
LOGIN_FAILED = "login failed"
LEASE_LOST = "lease lost"  # Redis mode: another process owns the bot now

#: How long closing waits for the client's tasks.
_CLOSE_WAIT_S = 5.0


class BotConnection:
    """One token's gateway connection, shared by every session logged in with it.

    Created on any thread; every coroutine method runs on the bridge's loop.
    The token is kept for discord.py only: never logged, never in the repr.
    *on_response(status, scope)* hears of every Discord REST answer;
    *on_closed(connection)* of the end of :meth:`close`; *on_change(connection)*
    of every change of its state or published view; *on_gateway_event(connection,
    event)* of its gateway coming and going (``connect``, ``resumed``,
    ``disconnect``, and ``close`` when it is closed for good). All on the loop.
    """

    def __init__(
        self,
        token: str,
        settings: Settings,
        *,
        bus: EventBus,
        builder: Executor,
        on_response: Callable[[int, str | None], None],
        on_closed: Callable[[BotConnection], None] = lambda connection: None,
        on_change: Callable[[BotConnection], None] = lambda connection: None,
        on_gateway_event: Callable[[BotConnection, str], None] = lambda c, e: None,
    ) -> None:
        self._token = token
        self.fingerprint = fingerprint(token)
        self._settings = settings
        self._bus = bus
        self._on_response = on_response
        self._on_closed = on_closed
        self._on_gateway_event = on_gateway_event
        self.lifecycle = Lifecycle(on_change=lambda: on_change(self))
        self.loader = MemberLoader(
            self._request_members,
            loaded=self._members_loaded,
            changed=self._loads_changed,
            label=self.fingerprint,
        )
        self.publisher = Publisher(
            members_of=self.loader.guilds.get,
            builder=builder,
            label=self.fingerprint,
            on_change=lambda view: on_change(self),
        )
        self.translator = EventTranslator(bus, self.fingerprint)
        #: The bot's REST calls (message history, sending), through this connection's client.
        self.rest = RestOperations(self._http, settings.discord_timeout_s)
        self._client: discord.Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._gateway_error: DiscordError | None = None
        self._ready_order: list[int] = []  # guild ids in READY's order: the first is the default
        self._awaiting: set[int] | None = None  # READY's guilds whose GUILD_CREATE is to come
        self._endpoints_held = False

    def __repr__(self) -> str:
        return f"<BotConnection token={self.fingerprint} {self.lifecycle.state.value}>"

    # -- for any thread ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """The lifecycle state."""
        return self.lifecycle.state

    @property
    def view(self) -> BotView:
        """What the connection has published."""
        return self.publisher.view

    def unusable(self) -> DiscordError | None:
        """Why this connection cannot serve its sessions any more (None: it can)."""
        lifecycle = self.lifecycle
        if lifecycle.state is State.FAILED:
            assert lifecycle.failure is not None
            return lifecycle.failure.error()
        if lifecycle.ending:
            if lifecycle.close_reason in (SHUTDOWN, LEASE_LOST):
                return ServiceClosed()
            return BotReleased()
        return None

    # -- login (loop) -------------------------------------------------------------------

    async def login(self, timeout: float) -> None:
        """Log in once (later callers share that login), then give the member lists up to
        *timeout* in all to arrive, unless Discord's cooldown delays them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._start_task is None:
            self._start_task = asyncio.create_task(
                self._start(timeout), name=f"membersense-login-{self.fingerprint}"
            )
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(self._start_task)
        except TimeoutError:
            raise DiscordTimeout("Discord did not finish the login in time") from None
        except DiscordError as exc:
            raise exc.failure().error() from None  # one outcome, many waiters
        try:
            async with asyncio.timeout_at(deadline):
                await self.lifecycle.wait_until(self._members_settled)
        except TimeoutError:
            pass  # the lists follow in the background; reads wait for them (bounded)

    async def _start(self, timeout: float) -> None:
        if self.lifecycle.state is not State.NEW:  # closed before the login task first ran
            raise ServiceClosed()
        self.lifecycle.advance(State.STARTING)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settings = self._settings
        compat.use_endpoints(settings.discord_api_base, settings.discord_gateway_url)
        self._endpoints_held = True
        client = self._client = compat.make_client(
            self,
            intents=INTENTS,
            http_trace=http_trace(self._on_response),
            enable_debug_events=False,
        )
        compat.set_rate_limit_ceiling(client, settings.discord_timeout_s)
        try:
            await bounded(self._rest_login(client), deadline - loop.time())
            self._runner = asyncio.create_task(
                self._run_gateway(client), name=f"membersense-gateway-{self.fingerprint}"
            )
            await bounded(self.lifecycle.wait_until(self._guilds_arrived), deadline - loop.time())
            if not self.publisher.view.guilds:
                raise NoGuilds()
            self.lifecycle.advance(State.READY)
        except BaseException as exc:
            await self.close(LOGIN_FAILED)
            if isinstance(exc, DiscordTimeout):
                raise DiscordTimeout("Discord did not finish the login in time") from None
            if isinstance(exc, (DiscordError, asyncio.CancelledError)):
                raise
            raise error_from(exc) from None
        log.info(
            "bot connected",
            extra={
                "fields": {"token": self.fingerprint, "guilds": len(self.publisher.view.guilds)}
            },
        )

    async def _rest_login(self, client: discord.Client) -> None:
        await client.login(self._token)
        flags = client.application.flags if client.application else None
        if flags is not None:
            missing = []
            if not (flags.gateway_guild_members or flags.gateway_guild_members_limited):
                missing.append(PRIVILEGED_INTENTS[0])
            if not (flags.gateway_message_content or flags.gateway_message_content_limited):
                missing.append(PRIVILEGED_INTENTS[1])
            if missing:
                raise MissingIntents(intents=tuple(missing))
        gateway_url, budget = await compat.bot_gateway(client.http)
        compat.use_discovered_gateway(gateway_url)
        if budget.get("remaining", 1) <= 0:
            raise DailyLoginsUsed(retry_after=budget.get("reset_after", 0) / 1000)

    async def _run_gateway(self, client: discord.Client) -> None:
        try:
            await client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # final close codes (4004/4013/4014) and the like
            self._gateway_error = error_from(exc)
            log.warning(
                "gateway connection ended: %s",
                type(exc).__name__,
                extra={"fields": {"token": self.fingerprint, "code": getattr(exc, "code", None)}},
            )
        finally:
            if self.lifecycle.state is State.READY:
                error = self._gateway_error or DiscordUnavailable(
                    "The connection to Discord was closed"
                )
                self.lifecycle.advance(State.FAILED, failure=error.failure())
            self.lifecycle.notify()
            if not client.is_closed():
                await client.close()

    def _check_gateway(self) -> None:
        if self._runner is not None and self._runner.done():
            raise self._gateway_error or DiscordUnavailable("The connection to Discord was closed")
        if self.lifecycle.ending:
            raise ServiceClosed()

    def _guilds_arrived(self) -> bool:
        self._check_gateway()
        return self._awaiting is not None and not self._awaiting

    def _members_settled(self) -> bool:
        if self.lifecycle.state is not State.READY:
            return True  # failed or closing: nothing more to wait for
        return all(self.loader.settled(guild_id) for guild_id in self.publisher.view.guilds)

    # -- closing (loop) --------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        """Close the client and wait for its tasks; idempotent.

        The work runs once, in a task of its own that callers await through a
        shield: a caller cancelled midway (releases are bounded) does not cut
        the cleanup short, and every later call waits for that same task.
        """
        if self._closing is None:
            self.lifecycle.advance(State.CLOSING, reason=reason)
            self._closing = asyncio.create_task(
                self._close(requested_by=asyncio.current_task()),
                name=f"membersense-close-{self.fingerprint}",
            )
        await asyncio.shield(self._closing)

    async def _close(self, requested_by: asyncio.Task[Any] | None) -> None:
        client, runner, start = self._client, self._runner, self._start_task
        # A login still under way would go on to open a gateway nobody closes. Unless
        # the login itself asked (it closes what it started when it fails), cancel it.
        if start is not None and start is not requested_by and not start.done():
            start.cancel()
        pending: list[asyncio.Task[Any]] = [*self.loader.close(), *self.publisher.close()]
        if runner is not None and not runner.done():
            # Stop the gateway's read loop before closing the client: a close racing a read
            # makes discord.py close the socket with 4000 (resumable), and Discord would
            # keep a session, and the bot online, that nobody will resume. Closed after the
            # loop, the socket gets 1000 and the session ends with it.
            runner.cancel()
            await asyncio.wait([runner], timeout=_CLOSE_WAIT_S)
        try:
            if client is not None:
                await client.close()
        except Exception as exc:  # closing must finish whatever the socket did
            log.warning("closing a Discord client failed: %s", type(exc).__name__)
        ready_task = compat.cancel_ready_task(client) if client is not None else None
        pending += [t for t in (runner, ready_task) if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=_CLOSE_WAIT_S)
        if self._endpoints_held:
            self._endpoints_held = False
            compat.release_endpoints()
        if self.lifecycle.close_reason in (RELEASED, LOGIN_FAILED):
            # No session wants these events any more. (At a shutdown or a lost lease they
            # stay: another process may go on where this one stopped.)
            for guild_id in self._ready_order:
                self._bus.drop(self.translator.topic(guild_id))
        self.lifecycle.advance(State.CLOSED)
        self._on_gateway_event(self, "close")
        self._on_closed(self)

    # -- REST (loop) ------------------------------------------------------------------------

    async def _http(self) -> HTTPClient:
        # What :attr:`rest` calls Discord with: this connection's client, while it serves.
        error = self.unusable()
        if error is not None:
            raise error
        if self._client is None:
            raise ServiceClosed()
        return self._client.http

    # -- what the gateway reports (loop; compat.GatewayListener) ---------------------------------

    def on_gateway(self, event: str, data: Any) -> None:
        """A raw gateway dispatch (see :data:`membersense.discord.compat.RAW_EVENTS`)."""
        if event == "READY":
            self._session_started(data)
        elif event == "GUILD_CREATE":
            self._guild_arrived(data)
        elif event == "GUILD_MEMBERS_CHUNK":
            self.loader.chunk(data)
        elif event == "RATE_LIMITED":
            self.loader.rate_limited(data)
        elif event in ("GUILD_MEMBER_ADD", "GUILD_MEMBER_UPDATE"):
            self._member_changed(event == "GUILD_MEMBER_ADD", data)
        elif event == "GUILD_MEMBER_REMOVE":
            self._member_left(data)
        elif event == "MESSAGE_CREATE":
            self.translator.message("message.create", data)
        elif event == "MESSAGE_UPDATE":
            self.translator.message("message.update", data)
        elif event in ("MESSAGE_DELETE", "MESSAGE_DELETE_BULK"):
            self.translator.message_deleted(data)

    def on_dispatch(self, event: str, args: tuple[Any, ...]) -> None:
        """An event discord.py dispatched, after updating its cache."""
        if event in ("connect", "resumed", "disconnect"):
            self._on_gateway_event(self, event)
        if event in ("guild_channel_create", "guild_channel_update", "guild_channel_delete"):
            channel = args[-1]
            self.translator.channel("channel." + event.rsplit("_", 1)[1], channel)
        elif event in (
            "guild_update",
            "guild_role_create",
            "guild_role_delete",
            "guild_role_update",
        ):
            guild = args[-1] if event == "guild_update" else args[-1].guild
            self.translator.guild(guild_summary(guild, self.loader.guilds.get(guild.id)))
        elif event == "guild_remove":
            self._guild_removed(args[0].id)
        elif event in ("guild_available", "guild_unavailable"):
            self.publisher.publish_availability(args[0].id, event == "guild_available")
        elif event in ("resumed", "disconnect"):
            log.info("gateway %s", event, extra={"fields": {"token": self.fingerprint}})

    def on_event(self, event: Event) -> None:
        """A bus event of this bot: keep the published state in step (the cache invalidation)."""
        client = self._client
        guild = client.get_guild(int(event.guild_id)) if client is not None else None
        if guild is None or self.lifecycle.ending:
            return
        if event.type.startswith("member."):
            self.publisher.publish_members(guild)
            if event.type != "member.update" or event.data.get("id") == str(guild.me.id):
                self.publisher.publish_guild(guild)  # the count, or the bot's own permissions
        elif event.type.startswith("channel."):
            self.publisher.publish_guild(guild)
        elif event.type == "guild.update":
            self.publisher.publish_guild(guild)
            self.publisher.publish_members(guild)  # role names may have changed

    def _session_started(self, data: Any) -> None:
        restarted = self._awaiting is not None
        guild_ids = [int(g["id"]) for g in data.get("guilds") or ()]
        self._ready_order = guild_ids
        self._awaiting = set(guild_ids)
        self.loader.session_started()
        for guild_id in list(self.publisher.view.guilds):
            if guild_id not in self._awaiting:
                self._guild_removed(guild_id)  # left while we were away
        for guild_id in guild_ids:
            # Events of the old gateway session that were never delivered are lost: tell
            # readers to re-read rather than let them miss something silently.
            self._bus.restart(self.translator.topic(guild_id))
        if restarted:
            log.info(
                "gateway session restarted; reloading members",
                extra={"fields": {"token": self.fingerprint}},
            )
        self.lifecycle.notify()

    def _guild_arrived(self, data: Any) -> None:
        if data.get("unavailable") is True:
            return
        assert self._client is not None
        guild = self._client.get_guild(int(data["id"]))
        if guild is None:
            return
        self.publisher.publish_guild(guild)
        self.loader.guild_arrived(guild.id, data)
        if self._awaiting is not None and guild.id in self._awaiting:
            self._awaiting.discard(guild.id)
            if not self._awaiting:
                self.publisher.set_order(self._ready_order)
        self.lifecycle.notify()

    def _guild_removed(self, guild_id: int) -> None:
        self.loader.guild_removed(guild_id)
        self.publisher.forget_guild(guild_id)
        if self._awaiting is not None:
            self._awaiting.discard(guild_id)
        self._bus.drop(self.translator.topic(guild_id))
        self.lifecycle.notify()

    def _member_changed(self, joined: bool, data: Any) -> None:
        guild, members = self._guild_and_members(data)
        if guild is None or members is None:
            return
        before = members.records.get(int(data["user"]["id"]))
        record = members.upsert(data)
        if joined or record != before:
            self.translator.member("member.join" if joined else "member.update", guild, record)

    def _member_left(self, data: Any) -> None:
        guild, members = self._guild_and_members(data)
        if guild is None or members is None:
            return
        user_id = int(data["user"]["id"])
        members.remove(user_id)
        self.translator.member_left(guild.id, user_id)

    def _guild_and_members(self, data: Any) -> tuple[discord.Guild | None, GuildMembers | None]:
        assert self._client is not None
        guild = self._client.get_guild(int(data["guild_id"]))
        return guild, self.loader.guilds.get(int(data["guild_id"]))

    # -- member loading (loop) -------------------------------------------------------------------

    async def _request_members(self, guild_id: int, nonce: str) -> None:
        assert self._client is not None
        await compat.request_all_members(self._client, guild_id, nonce)

    def _members_loaded(self, guild_id: int) -> None:
        assert self._client is not None
        guild = self._client.get_guild(guild_id)
        if guild is not None:
            self.publisher.publish_guild(guild)  # the member count, now exact
            self.publisher.publish_members(guild)

    def _loads_changed(self) -> None:
        for guild_id in self.publisher.view.guilds:
            self.publisher.publish_members_retry(guild_id, self.loader.retry_at(guild_id))
        self.lifecycle.notify()
