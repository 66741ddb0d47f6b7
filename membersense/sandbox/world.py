"""The sandbox's world: its guilds, bots and users, Discord's JSON for each, and its changes.

Everything here runs on the sandbox's event-loop thread (REST, gateway and control
handlers); nothing locks.  Each change that Discord would dispatch is published on
:attr:`World.events` as a :class:`WorldEvent` whose ``data`` is the dispatch ``d``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.models import (
    CHANNEL_CATEGORY,
    CHANNEL_TEXT,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILD_PRESENCES,
    INTENT_GUILDS,
    MESSAGE_REPLY,
    PERM_ADMINISTRATOR,
    PERM_ALL,
    Bot,
    Channel,
    Guild,
    Member,
    Message,
    Role,
    User,
)
from membersense.sandbox.payloads import Payloads
from membersense.sandbox.snowflake import SnowflakeFactory, now_ms

__all__ = [
    "Bot",
    "Channel",
    "EventHub",
    "Guild",
    "Member",
    "Message",
    "Role",
    "User",
    "World",
    "WorldEvent",
]

_log = logging.getLogger(__name__)

#: How long a message nonce sent with ``enforce_nonce`` is remembered: Discord says "the past
#: few minutes" without a figure.
NONCE_WINDOW_S = 180.0

_USER_MENTION = re.compile(r"<@!?(\d{1,20})>")
_ROLE_MENTION = re.compile(r"<@&(\d{1,20})>")


@dataclass(frozen=True)
class WorldEvent:
    """One change of the world, shaped as the gateway dispatch Discord would send."""

    #: Dispatch name: "GUILD_MEMBER_ADD", "MESSAGE_CREATE", "CHANNEL_DELETE", "TOKEN_REVOKED", ...
    name: str
    guild_id: int | None
    #: The dispatch ``d`` exactly as Discord sends it (messages with their full content).
    data: dict[str, Any]
    #: The intent bit that gates it; 0 for always.
    intent: int
    #: The bot concerned, for bot-specific events (TOKEN_REVOKED).
    bot_id: int | None = None


class EventHub:
    """Synchronous publish/subscribe of :class:`WorldEvent` on the sandbox loop thread."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[WorldEvent], None]] = []

    def subscribe(self, listener: Callable[[WorldEvent], None]) -> Callable[[], None]:
        """Call ``listener`` for every later event; returns an idempotent unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def publish(self, event: WorldEvent) -> None:
        """Hand ``event`` to every listener; a failing listener is logged, not propagated."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one broken subscriber must not break the world's change
                _log.exception("sandbox event listener failed on %s", event.name)

    @property
    def listener_count(self) -> int:
        """How many listeners are subscribed."""
        return len(self._listeners)


class World(Payloads):
    """Guilds, bots and users of one sandbox, with Discord's JSON payloads and dispatched changes."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock: Callable[[], float] = config.clock
        self.events = EventHub()
        self.snowflakes = SnowflakeFactory()
        self.users: dict[int, User] = {}
        #: Where attachment URLs point: Discord's CDN until the server knows its own address.
        self.cdn_base = "https://cdn.discordapp.com"
        self.guilds: dict[int, Guild] = {}
        self.bots: dict[int, Bot] = {}
        self._bots_by_token: dict[str, Bot] = {}
        self._channels: dict[int, Channel] = {}
        self._usernames: set[str] = set()
        #: (author id, nonce) → (clock reading, message) of messages sent with ``enforce_nonce``,
        #: oldest first.
        self._nonces: dict[tuple[int, str], tuple[float, Message]] = {}

    # ------------------------------------------------------------------ registry
    def add_user(self, user: User) -> User:
        """Register a user (usernames of humans are unique, as on Discord)."""
        if user.id in self.users:
            raise ValueError(f"user {user.id} exists")
        if not user.bot:
            if user.username in self._usernames:
                raise ValueError(f"username {user.username!r} is taken")
            self._usernames.add(user.username)
        self.users[user.id] = user
        return user

    def username_taken(self, username: str) -> bool:
        """Whether a human user already has ``username``."""
        return username in self._usernames

    def add_bot(self, bot: Bot) -> Bot:
        """Register a bot (its user must not be registered yet)."""
        if bot.token in self._bots_by_token:
            raise ValueError("duplicate bot token")
        self.add_user(bot.user)
        self.bots[bot.id] = bot
        self._bots_by_token[bot.token] = bot
        return bot

    def add_guild(self, guild: Guild) -> Guild:
        """Register a guild and index its channels."""
        self.guilds[guild.id] = guild
        for channel in guild.channels:
            self._channels[channel.id] = channel
        return guild

    def index_channel(self, channel: Channel) -> None:
        """Make a channel findable by id (the generator calls this for channels it adds)."""
        self._channels[channel.id] = channel

    # ------------------------------------------------------------------ lookups
    def bot_for_token(self, token: str) -> Bot | None:
        """The bot with this token; None for unknown or revoked tokens."""
        bot = self._bots_by_token.get(token)
        return None if bot is None or bot.revoked else bot

    def bot_by_token_any(self, token: str) -> Bot | None:
        """The bot with this token even when revoked (for the control API)."""
        return self._bots_by_token.get(token)

    def guilds_of(self, bot: Bot) -> list[Guild]:
        """The guilds ``bot`` is in, in creation order."""
        return [g for g in self.guilds.values() if bot.id in g.bots]

    def guild(self, guild_id: int) -> Guild | None:
        """The guild with this id, or None."""
        return self.guilds.get(guild_id)

    def channel(self, channel_id: int) -> Channel | None:
        """The channel with this id in any guild, or None."""
        return self._channels.get(channel_id)

    def user(self, user_id: int) -> User | None:
        """The user with this id, or None."""
        return self.users.get(user_id)

    # ------------------------------------------------------------------ session starts
    def _roll_session_window(self, bot: Bot, now: float) -> None:
        start = bot.session_window_start
        if start is not None and now - start >= self.config.session_start_reset_s:
            bot.session_starts_remaining = bot.session_start_total
            bot.session_window_start = None

    def spend_identify(self, bot: Bot) -> bool:
        """Spend one of ``bot``'s session starts; False when none are left in this window."""
        now = self.clock()
        self._roll_session_window(bot, now)
        if bot.session_starts_remaining <= 0:
            return False
        if bot.session_window_start is None:
            bot.session_window_start = now
        bot.session_starts_remaining -= 1
        return True

    def session_start_limit_payload(self, bot: Bot) -> dict[str, int]:
        """``session_start_limit`` of ``GET /gateway/bot``."""
        now = self.clock()
        self._roll_session_window(bot, now)
        if bot.session_window_start is None:
            reset_after = 0
        else:
            reset_after = int(
                (bot.session_window_start + self.config.session_start_reset_s - now) * 1000
            )
        return {
            "total": bot.session_start_total,
            "remaining": bot.session_starts_remaining,
            "reset_after": max(0, reset_after),
            "max_concurrency": self.config.max_concurrency,
        }

    # ------------------------------------------------------------------ permissions
    def base_permissions(self, guild: Guild, member: Member) -> int:
        """A member's guild-wide permissions (owner and ADMINISTRATOR get everything)."""
        if member.user.id == guild.owner_id:
            return PERM_ALL
        perms = 0
        member_roles = set(member.roles)
        for role in guild.roles:
            if role.id == guild.id or role.id in member_roles:
                perms |= role.permissions
        return PERM_ALL if perms & PERM_ADMINISTRATOR else perms

    def channel_permissions(self, guild: Guild, member: Member, channel: Channel) -> int:
        """A member's permissions in ``channel``, applying overwrites in Discord's order."""
        perms = self.base_permissions(guild, member)
        if perms & PERM_ADMINISTRATOR:
            return PERM_ALL
        # A channel in a category without overwrites of its own inherits the category's.
        overwrites = channel.overwrites
        if not overwrites and channel.parent_id is not None:
            parent = self.channel(channel.parent_id)
            overwrites = parent.overwrites if parent is not None else []
        by_id = {ow.id: ow for ow in overwrites}
        everyone = by_id.get(guild.id)
        if everyone is not None:
            perms = (perms & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for role_id in member.roles:
            ow = by_id.get(role_id)
            if ow is not None and ow.type == 0:
                allow |= ow.allow
                deny |= ow.deny
        perms = (perms & ~deny) | allow
        own = by_id.get(member.user.id)
        if own is not None and own.type == 1:
            perms = (perms & ~own.deny) | own.allow
        return perms

    # ------------------------------------------------------------------ changes (dispatched)
    def _publish(
        self,
        name: str,
        guild_id: int | None,
        data: dict[str, Any],
        intent: int,
        bot_id: int | None = None,
    ) -> None:
        self.events.publish(
            WorldEvent(name=name, guild_id=guild_id, data=data, intent=intent, bot_id=bot_id)
        )

    def _member_event_data(self, guild: Guild, member: Member) -> dict[str, Any]:
        data = self.member_payload(guild, member)
        data["guild_id"] = str(guild.id)
        return data

    def create_user(
        self,
        username: str,
        *,
        global_name: str | None = None,
        avatar: str | None = None,
        bot: bool = False,
    ) -> User:
        """Make and register a new user with a snowflake for now."""
        return self.add_user(
            User(
                id=self.snowflakes.next(),
                username=username,
                global_name=global_name,
                avatar=avatar,
                bot=bot,
                discriminator="0000" if bot else "0",
            )
        )

    def add_member(
        self,
        guild: Guild,
        user: User,
        *,
        roles: Iterable[int] = (),
        nick: str | None = None,
        status: str = "offline",
    ) -> Member:
        """``user`` joins ``guild`` now (GUILD_MEMBER_ADD)."""
        if user.id in guild.members:
            raise ValueError("already a member")
        member = Member(
            user=user,
            joined_ms=now_ms(),
            roles=list(dict.fromkeys(roles)),
            nick=nick,
            status=status,
        )
        guild.members[user.id] = member
        guild.members_changed()
        self._publish(
            "GUILD_MEMBER_ADD",
            guild.id,
            self._member_event_data(guild, member),
            INTENT_GUILD_MEMBERS,
        )
        return member

    def update_member(self, guild: Guild, member: Member, **changes: Any) -> Member:
        """Change a member's ``nick``, ``roles``, ``avatar``, ``pending``, ... (GUILD_MEMBER_UPDATE).

        ``global_name`` and ``username`` change the member's user.
        """
        for key, value in changes.items():
            if key in ("global_name", "username"):
                if key == "username" and value != member.user.username:
                    if self.username_taken(value):
                        raise ValueError(f"username {value!r} is taken")
                    self._usernames.discard(member.user.username)
                    self._usernames.add(value)
                setattr(member.user, key, value)
            elif key == "roles":
                member.roles = list(dict.fromkeys(value))
            elif key in ("nick", "avatar", "pending", "deaf", "mute"):
                setattr(member, key, value)
            else:
                raise ValueError(f"cannot change {key!r}")
        self._publish(
            "GUILD_MEMBER_UPDATE",
            guild.id,
            self._member_event_data(guild, member),
            INTENT_GUILD_MEMBERS,
        )
        return member

    def set_presence(self, guild: Guild, member: Member, status: str) -> Member:
        """Change a member's status ("online", "idle", "dnd", "offline") (PRESENCE_UPDATE)."""
        member.status = status
        self._publish(
            "PRESENCE_UPDATE",
            guild.id,
            self.presence_payload(guild, member),
            INTENT_GUILD_PRESENCES,
        )
        return member

    def remove_member(self, guild: Guild, member: Member) -> None:
        """``member`` leaves ``guild`` (GUILD_MEMBER_REMOVE); their messages stay."""
        del guild.members[member.user.id]
        guild.members_changed()
        self._publish(
            "GUILD_MEMBER_REMOVE",
            guild.id,
            {"guild_id": str(guild.id), "user": self.user_payload(member.user)},
            INTENT_GUILD_MEMBERS,
        )

    def resolve_mentions(
        self, guild: Guild, content: str, allowed_mentions: dict[str, Any] | None = None
    ) -> tuple[list[int], list[int], bool]:
        """User ids, role ids and @everyone that ``content`` mentions, filtered by ``allowed_mentions``.

        ``allowed_mentions`` must already be validated (see rest.py).
        """
        parse: set[str] = {"users", "roles", "everyone"}
        only_users: set[int] | None = None
        only_roles: set[int] | None = None
        if allowed_mentions is not None:
            parse = set(allowed_mentions.get("parse", []))
            if allowed_mentions.get("users"):
                only_users = {int(u) for u in allowed_mentions["users"]}
            if allowed_mentions.get("roles"):
                only_roles = {int(r) for r in allowed_mentions["roles"]}
        users: list[int] = []
        for match in _USER_MENTION.finditer(content):
            uid = int(match.group(1))
            if (
                uid in self.users
                and uid not in users
                and ("users" in parse or (only_users is not None and uid in only_users))
            ):
                users.append(uid)
        roles: list[int] = []
        for match in _ROLE_MENTION.finditer(content):
            rid = int(match.group(1))
            if (
                guild.role(rid) is not None
                and rid not in roles
                and ("roles" in parse or (only_roles is not None and rid in only_roles))
            ):
                roles.append(rid)
        everyone = "everyone" in parse and ("@everyone" in content or "@here" in content)
        return users, roles, everyone

    def create_message(
        self,
        channel: Channel,
        author: User,
        content: str,
        *,
        embeds: Iterable[dict[str, Any]] = (),
        attachments: Iterable[dict[str, Any]] = (),
        reference: Message | None = None,
        mention_ids: Iterable[int] = (),
        mention_role_ids: Iterable[int] = (),
        mention_everyone: bool = False,
        tts: bool = False,
        nonce: int | str | None = None,
        flags: int = 0,
    ) -> Message:
        """Post a message now (MESSAGE_CREATE)."""
        message = Message(
            id=self.snowflakes.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            content=content,
            type=MESSAGE_REPLY if reference is not None else 0,
            reference_id=None if reference is None else reference.id,
            attachments=list(attachments),
            embeds=list(embeds),
            mention_ids=list(mention_ids),
            mention_role_ids=list(mention_role_ids),
            mention_everyone=mention_everyone,
            tts=tts,
            nonce=nonce,
            flags=flags,
        )
        channel.add_message(message)
        self._publish(
            "MESSAGE_CREATE",
            channel.guild_id,
            self.message_dispatch_payload(message),
            INTENT_GUILD_MESSAGES,
        )
        return message

    def message_by_nonce(self, author: User, nonce: int | str) -> Message | None:
        """The message ``author`` sent with ``nonce`` and ``enforce_nonce`` within the last
        :data:`NONCE_WINDOW_S`, if it still exists (Discord answers a repeat with it)."""
        now = self.clock()
        while self._nonces:  # oldest first: drop what has aged out
            key, (sent, _) = next(iter(self._nonces.items()))
            if now - sent < NONCE_WINDOW_S:
                break
            del self._nonces[key]
        found = self._nonces.get((author.id, str(nonce)))
        if found is None:
            return None
        message = found[1]
        channel = self.channel(message.channel_id)
        return message if channel is not None and message.id in channel.messages else None

    def remember_nonce(self, message: Message) -> None:
        """``message`` was sent with ``enforce_nonce``: a repeat of its nonce returns it for a while."""
        assert message.nonce is not None
        key = (message.author.id, str(message.nonce))
        self._nonces.pop(key, None)  # re-inserted last: the dict stays oldest first
        self._nonces[key] = (self.clock(), message)

    def edit_message(
        self,
        message: Message,
        *,
        content: str | None = None,
        embeds: Iterable[dict[str, Any]] | None = None,
        mention_ids: Iterable[int] | None = None,
        mention_role_ids: Iterable[int] | None = None,
        mention_everyone: bool | None = None,
        flags: int | None = None,
    ) -> Message:
        """Edit a message now (MESSAGE_UPDATE with the full message)."""
        if content is not None:
            message.content = content
        if embeds is not None:
            message.embeds = list(embeds)
        if mention_ids is not None:
            message.mention_ids = list(mention_ids)
        if mention_role_ids is not None:
            message.mention_role_ids = list(mention_role_ids)
        if mention_everyone is not None:
            message.mention_everyone = mention_everyone
        if flags is not None:
            message.flags = flags
        message.edited_ms = max(now_ms(), message.created_ms + 1)
        self._publish(
            "MESSAGE_UPDATE",
            message.guild_id,
            self.message_dispatch_payload(message),
            INTENT_GUILD_MESSAGES,
        )
        return message

    def delete_message(self, message: Message) -> None:
        """Delete a message (MESSAGE_DELETE)."""
        channel = self.channel(message.channel_id)
        if channel is not None:
            channel.remove_message(message.id)
        self._publish(
            "MESSAGE_DELETE",
            message.guild_id,
            {
                "id": str(message.id),
                "channel_id": str(message.channel_id),
                "guild_id": str(message.guild_id),
            },
            INTENT_GUILD_MESSAGES,
        )

    def create_channel(
        self,
        guild: Guild,
        *,
        name: str,
        type: int = CHANNEL_TEXT,
        parent_id: int | None = None,
        topic: str | None = None,
        position: int | None = None,
    ) -> Channel:
        """Create a channel (CHANNEL_CREATE)."""
        if position is None:
            same_kind = [c.position for c in guild.channels if c.type == type]
            position = max(same_kind, default=-1) + 1
        channel = Channel(
            id=self.snowflakes.next(),
            guild_id=guild.id,
            type=type,
            name=name,
            position=position,
            parent_id=parent_id,
            topic=topic if type == CHANNEL_TEXT else None,
        )
        guild.channels.append(channel)
        self._channels[channel.id] = channel
        self._publish("CHANNEL_CREATE", guild.id, self.channel_payload(channel), INTENT_GUILDS)
        return channel

    def update_channel(self, channel: Channel, **changes: Any) -> Channel:
        """Change a channel's ``name``, ``topic``, ``position``, ``parent_id``, ``nsfw`` (CHANNEL_UPDATE)."""
        for key, value in changes.items():
            if key not in ("name", "topic", "position", "parent_id", "nsfw", "rate_limit_per_user"):
                raise ValueError(f"cannot change {key!r}")
            setattr(channel, key, value)
        self._publish(
            "CHANNEL_UPDATE", channel.guild_id, self.channel_payload(channel), INTENT_GUILDS
        )
        return channel

    def delete_channel(self, channel: Channel) -> None:
        """Delete a channel and its messages (CHANNEL_DELETE); a category's children lose their parent."""
        guild = self.guild(channel.guild_id)
        if guild is None:
            return
        guild.channels.remove(channel)
        self._channels.pop(channel.id, None)
        if guild.system_channel_id == channel.id:
            guild.system_channel_id = None
        if guild.rules_channel_id == channel.id:
            guild.rules_channel_id = None
        if guild.afk_channel_id == channel.id:
            guild.afk_channel_id = None
        self._publish("CHANNEL_DELETE", guild.id, self.channel_payload(channel), INTENT_GUILDS)
        if channel.type == CHANNEL_CATEGORY:
            for child in guild.channels:
                if child.parent_id == channel.id:
                    self.update_channel(child, parent_id=None)

    def revoke_token(self, bot: Bot) -> None:
        """Revoke ``bot``'s token: REST answers 401 and its gateway sockets are closed (TOKEN_REVOKED)."""
        bot.revoked = True
        self._publish("TOKEN_REVOKED", None, {}, 0, bot_id=bot.id)

    def summary(self) -> dict[str, Any]:
        """Counts for ``GET /_sandbox/state``."""
        return {
            "guilds": [
                {
                    "id": str(g.id),
                    "name": g.name,
                    "member_count": g.member_count,
                    "channels": len(g.channels),
                    "messages": sum(len(c.message_ids) for c in g.channels),
                    "bots": [str(b) for b in sorted(g.bots)],
                }
                for g in self.guilds.values()
            ],
            "bots": [
                {
                    "id": str(b.id),
                    "username": b.user.username,
                    "revoked": b.revoked,
                    "granted_intents": b.granted_intents,
                    "session_starts_remaining": b.session_starts_remaining,
                }
                for b in self.bots.values()
            ],
            "users": len(self.users),
        }
