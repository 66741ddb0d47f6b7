"""The Discord service of one process: discord.py on the bridge's loop.

:class:`LocalDiscord` implements :class:`~membersense.discord.service.DiscordService`
with the pieces of this package: a :class:`~membersense.bridge.Bridge` (the
loop thread), a :class:`~membersense.discord.pool.ConnectionPool` (one
gateway connection per bot), the published state each connection keeps
current, and the guards that keep this server out of Discord's
invalid-request ban.

Reads of members and channels are answered from published state without
touching the loop; a message history, and sending, editing or deleting a
message, is one bounded call to Discord's REST API on the loop, after the
channel and the bot's permissions in it were checked against published state.

It also routes the event bus to the connections: each connection's published
state is kept in step by the events of its own bot (the cache invalidation is
one subscriber of the bus).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from membersense.bridge import Bridge
from membersense.bus import Event, EventBus
from membersense.config import Settings
from membersense.discord.connection import BotConnection
from membersense.discord.errors import (
    BotReleased,
    ChannelNotFound,
    Failure,
    GuildNotFound,
    InvalidMessage,
    InvalidToken,
    MembersLoading,
    MissingAccess,
    NoGuilds,
    NotMessageable,
    ServiceClosed,
)
from membersense.discord.invalid_requests import (
    FailedTokens,
    InvalidRequestBudget,
    InvalidRequests,
    RefusedTokens,
)
from membersense.discord.outgoing import create_body, edit_body, nonce_for
from membersense.discord.pool import ConnectionPool
from membersense.discord.published import BotView, ChannelEntry, GuildView
from membersense.discord.serializers import serialize_message, use_cdn_base
from membersense.discord.service import BotLogin, ChannelKind, GuildSummary, JsonDocument
from membersense.discord.tokens import fingerprint

__all__ = ["LocalDiscord"]

log = logging.getLogger("membersense.discord")

#: Retry-After for a member list still loading when Discord gave no cooldown to go by.
LOADING_RETRY_AFTER_S = 2.0


class LocalDiscord:
    """Logged-in bots of this process (see the module docstring).

    *has_sessions(fingerprint)* tells whether a bot still has sessions (the
    session store's count): the pool keeps a bot connected while it does. The
    guards default to this process's own (Redis mode passes shared ones).
    *on_answer(status)* hears of every Discord REST answer and
    *on_gateway_event(connection, event)* of gateways coming and going (the
    app's metrics; this layer imports none of the web layer).
    """

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        *,
        has_sessions: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
        invalid_requests: InvalidRequests | None = None,
        failed_tokens: RefusedTokens | None = None,
        on_answer: Callable[[int], None] = lambda status: None,
        on_gateway_event: Callable[[object, str], None] = lambda c, e: None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self._on_answer = on_answer
        self._on_gateway_event = on_gateway_event
        use_cdn_base(settings.discord_cdn_base)
        self.bridge = Bridge()
        #: Discord's 401/403/429 answers to this process; spent, it holds calls back.
        self.invalid_requests: InvalidRequests = invalid_requests or InvalidRequestBudget(
            settings.discord_invalid_request_limit, clock=clock
        )
        #: Tokens Discord refused lately, answered 401 without asking again.
        self.failed_tokens: RefusedTokens = failed_tokens or FailedTokens(clock=clock)
        self.pool = ConnectionPool(
            self.bridge,
            self._new_connection,
            has_sessions=has_sessions,
            linger_s=settings.connection_linger_s,
            before_new=self.invalid_requests.check,
        )
        self.bridge.add_stop_hook(self.pool.close_all)
        self._builder: ThreadPoolExecutor | None = None
        self._builder_lock = threading.Lock()
        self._unsubscribe = bus.subscribe(self._route_event)

    def __repr__(self) -> str:
        return f"<LocalDiscord {self.pool!r}>"

    def _new_connection(self, token: str) -> BotConnection:
        return BotConnection(
            token,
            self.settings,
            bus=self.bus,
            builder=self._snapshot_builder(),
            on_response=self._answered_for(fingerprint(token)),
            on_gateway_event=self._on_gateway_event,
            on_closed=self.pool.closed_connection,
            on_change=self._connection_changed,
        )

    def _answered_for(self, bot: str) -> Callable[[int, str | None], None]:
        """What to do with each of Discord's REST answers to *bot*: count it."""
        record, observe = self.invalid_requests.record, self._on_answer

        def answered(status: int, scope: str | None) -> None:
            record(status, scope, bot)
            observe(status)

        return answered

    def _connection_changed(self, connection: BotConnection) -> None:
        """A connection's state or published view changed (on the loop). Redis mode mirrors it."""

    def _snapshot_builder(self) -> Executor:
        # One thread: snapshot builds are CPU-bound, and one at a time leaves the
        # other core to requests. Made with the first connection, not at start-up.
        with self._builder_lock:
            if self._builder is None:
                self._builder = ThreadPoolExecutor(1, thread_name_prefix="membersense-snapshots")
            return self._builder

    def _route_event(self, event: Event) -> None:
        # A bus subscriber: on the loop, for every event published in this process.
        connection = self.pool.get(event.topic.partition("/")[0])
        if connection is not None:
            connection.on_event(event)

    # -- sessions -------------------------------------------------------------------------

    def login(self, token: str) -> BotLogin:
        """Connect the bot (or join its connection) for one more session."""
        self.failed_tokens.check(token)
        try:
            connection = self.pool.connect(token, self.settings.login_timeout_s)
        except InvalidToken:
            self.failed_tokens.add(token)
            raise
        guilds = connection.view.summaries()
        if not guilds:  # a shared connection whose bot has since lost every server
            raise NoGuilds()
        return BotLogin(connection.fingerprint, guilds)

    def release(self, fingerprint: str) -> None:
        """A session of this bot ended."""
        self.pool.release(fingerprint)

    def check(self, fingerprint: str) -> Failure | None:
        """Why sessions of this bot can no longer be served, or None."""
        connection = self.pool.get(fingerprint)
        if connection is None:
            return (ServiceClosed() if self.pool.closed else BotReleased()).failure()
        error = connection.unusable()
        return error.failure() if error is not None else None

    # -- where reads come from (Redis mode overrides these) ---------------------------

    def _connection(self, fingerprint: str) -> BotConnection:
        connection = self.pool.get(fingerprint)
        if connection is None:
            raise ServiceClosed() if self.pool.closed else BotReleased()
        error = connection.unusable()
        if error is not None:
            raise error
        return connection

    def _view(self, fingerprint: str) -> BotView:
        """What the bot's connection published (raises why it cannot be read)."""
        return self._connection(fingerprint).view

    def _await_members(self, fingerprint: str, guild_id: int) -> GuildView | None:
        """The guild's view once its member list is published (bounded), or None if gone."""
        waited = self._connection(fingerprint).publisher.wait_for_members(
            guild_id, self.settings.discord_timeout_s
        )
        error = self._connection(fingerprint).unusable() if waited is not None else None
        if error is not None:
            raise error
        return waited

    def _rest(self, fingerprint: str, operation: str, *args: Any) -> Any:
        """One of the bot's REST operations (:class:`~membersense.discord.rest.RestOperations`)
        on the loop: Discord's JSON."""
        connection = self._connection(fingerprint)
        return self.pool.call(
            getattr(connection.rest, operation), *args, timeout=self.settings.discord_timeout_s
        )

    # -- reads ----------------------------------------------------------------------------------

    def _guild(self, fingerprint: str, guild_id: int) -> GuildView:
        view = self._view(fingerprint).guilds.get(guild_id)
        if view is None:
            raise GuildNotFound()
        return view

    def guilds(self, fingerprint: str) -> tuple[GuildSummary, ...]:
        """The bot's guilds now, the default one first."""
        return self._view(fingerprint).summaries()

    def members(
        self, fingerprint: str, guild_id: int, *, limit: int | None = None, after: int | None = None
    ) -> JsonDocument:
        """The guild's members from the published snapshot (waits, bounded, while loading)."""
        view = self._guild(fingerprint, guild_id)
        snapshot = view.members
        if snapshot is None:
            waited = self._await_members(fingerprint, guild_id)
            if waited is None:
                raise GuildNotFound()
            snapshot = waited.members
            if snapshot is None:
                retry_at = waited.members_retry_at
                raise MembersLoading(
                    retry_after=max(1.0, retry_at - time.time())
                    if retry_at is not None
                    else LOADING_RETRY_AFTER_S
                )
        if limit is None and after is None:
            return snapshot.document
        return snapshot.page(limit, after)

    def channels(
        self, fingerprint: str, guild_id: int, *, kind: ChannelKind = "text"
    ) -> list[dict[str, Any]]:
        """The guild's channels of *kind*, in the order Discord shows them."""
        view = self._guild(fingerprint, guild_id)
        return [dict(entry.data) for entry in view.channels if kind == "all" or entry.kind == kind]

    def _message_channel(self, fingerprint: str, guild_id: int, channel_id: int) -> ChannelEntry:
        channel = self._guild(fingerprint, guild_id).channel_index.get(channel_id)
        if channel is None:  # unknown, or another guild's: both look the same
            raise ChannelNotFound()
        if not channel.messageable:
            raise NotMessageable()
        return channel

    def messages(
        self,
        fingerprint: str,
        guild_id: int,
        channel_id: int,
        *,
        limit: int = 100,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
    ) -> list[dict[str, Any]]:
        """Up to *limit* messages of a channel of the guild, newest first, from Discord."""
        channel = self._message_channel(fingerprint, guild_id, channel_id)
        if not channel.readable:
            raise MissingAccess("The bot cannot read messages in this channel")
        self.invalid_requests.check(fingerprint)  # a REST call: not while the budget is spent
        payloads = self._rest(fingerprint, "messages", channel_id, limit, before, after, around)
        messages = [serialize_message(p) for p in payloads]
        messages.sort(key=lambda m: int(m["id"]), reverse=True)
        return messages

    # -- sending --------------------------------------------------------------------------------

    def send_message(
        self,
        fingerprint: str,
        guild_id: int,
        channel_id: int,
        content: str,
        *,
        reply_to: int | None = None,
        allow_mentions: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Post a message as the bot, after checking the channel and the bot's permission to
        send there (and to read it, for a reply) against published state."""
        channel = self._message_channel(fingerprint, guild_id, channel_id)
        if not channel.sendable:
            raise MissingAccess("The bot cannot send messages in this channel")
        if reply_to is not None and not channel.readable:
            raise MissingAccess("The bot cannot read this channel's history, which a reply needs")
        nonce = nonce_for(channel_id, idempotency_key) if idempotency_key is not None else None
        body = create_body(
            channel_id, content, reply_to=reply_to, allow_mentions=allow_mentions, nonce=nonce
        )
        self.invalid_requests.check(fingerprint)
        try:
            payload = self._rest(fingerprint, "send_message", channel_id, body)
        except InvalidMessage:
            if reply_to is None:
                raise
            # The content was checked before; what Discord refused is the reply.
            raise InvalidMessage("replyTo must be a message of this channel") from None
        return serialize_message(payload)

    def edit_message(
        self,
        fingerprint: str,
        guild_id: int,
        channel_id: int,
        message_id: int,
        content: str,
        *,
        allow_mentions: bool = False,
    ) -> dict[str, Any]:
        """Replace the content of one of the bot's messages (Discord refuses others' with 403)."""
        self._message_channel(fingerprint, guild_id, channel_id)
        self.invalid_requests.check(fingerprint)
        payload = self._rest(
            fingerprint,
            "edit_message",
            channel_id,
            message_id,
            edit_body(content, allow_mentions=allow_mentions),
        )
        return serialize_message(payload)

    def delete_message(
        self, fingerprint: str, guild_id: int, channel_id: int, message_id: int
    ) -> None:
        """Delete a message of the channel (Discord decides whose: the bot's own, or any with
        Manage Messages)."""
        self._message_channel(fingerprint, guild_id, channel_id)
        self.invalid_requests.check(fingerprint)
        self._rest(fingerprint, "delete_message", channel_id, message_id)

    # -- lifecycle -------------------------------------------------------------------------------

    def refuse_new(self) -> None:
        """Nothing to do here: the session store refuses logins, and a login already past
        it may still finish within the grace for requests in flight."""

    def close(self) -> None:
        """Close every connection and stop the bridge and the builder. Idempotent."""
        self._unsubscribe()
        self.pool.refuse_new()
        self.bridge.stop()  # its stop hook closes the pool's connections on the loop
        with self._builder_lock:
            builder, self._builder = self._builder, None
        if builder is not None:
            builder.shutdown(wait=True, cancel_futures=True)
