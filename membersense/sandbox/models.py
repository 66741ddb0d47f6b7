"""The objects a sandbox world is made of: users, bots, guilds, roles, channels, members, messages.

Plain mutable records; all JSON shaping lives in :class:`membersense.sandbox.world.World`
(one serializer per Discord object), all changes go through World's methods so that
they are dispatched.  Times are Unix milliseconds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from membersense.sandbox.snowflake import snowflake_ms

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT
PRIVILEGED_INTENT_NAMES = {
    "GUILD_MEMBERS": INTENT_GUILD_MEMBERS,
    "GUILD_PRESENCES": INTENT_GUILD_PRESENCES,
    "MESSAGE_CONTENT": INTENT_MESSAGE_CONTENT,
}

# Application flags that tell a bot which privileged intents it has ("_LIMITED" is the
# form Discord reports for bots in fewer than 100 guilds, i.e. every sandbox bot).
APP_FLAG_GATEWAY_PRESENCE_LIMITED = 1 << 13
APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED = 1 << 15
APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19

# Permission bits (https://discord.com/developers/docs/topics/permissions).
PERM_CREATE_INSTANT_INVITE = 1 << 0
PERM_KICK_MEMBERS = 1 << 1
PERM_BAN_MEMBERS = 1 << 2
PERM_ADMINISTRATOR = 1 << 3
PERM_MANAGE_CHANNELS = 1 << 4
PERM_MANAGE_GUILD = 1 << 5
PERM_ADD_REACTIONS = 1 << 6
PERM_VIEW_AUDIT_LOG = 1 << 7
PERM_STREAM = 1 << 9
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_MANAGE_MESSAGES = 1 << 13
PERM_EMBED_LINKS = 1 << 14
PERM_ATTACH_FILES = 1 << 15
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_MENTION_EVERYONE = 1 << 17
PERM_USE_EXTERNAL_EMOJIS = 1 << 18
PERM_CONNECT = 1 << 20
PERM_SPEAK = 1 << 21
PERM_CHANGE_NICKNAME = 1 << 26
PERM_MANAGE_NICKNAMES = 1 << 27
PERM_MANAGE_ROLES = 1 << 28
PERM_ALL = (1 << 51) - 1

#: What @everyone may do in a fresh guild (the common subset of Discord's default).
DEFAULT_EVERYONE_PERMISSIONS = (
    PERM_CREATE_INSTANT_INVITE
    | PERM_ADD_REACTIONS
    | PERM_STREAM
    | PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES
    | PERM_READ_MESSAGE_HISTORY
    | PERM_USE_EXTERNAL_EMOJIS
    | PERM_CONNECT
    | PERM_SPEAK
    | PERM_CHANGE_NICKNAME
)
#: The permissions a sandbox bot's managed role carries (a typical read/post bot).
DEFAULT_BOT_PERMISSIONS = (
    PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | PERM_READ_MESSAGE_HISTORY
    | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES
    | PERM_ADD_REACTIONS
    | PERM_MANAGE_MESSAGES
)

# Channel types.
CHANNEL_TEXT = 0
CHANNEL_VOICE = 2
CHANNEL_CATEGORY = 4
CHANNEL_TYPE_NAMES = {"text": CHANNEL_TEXT, "voice": CHANNEL_VOICE, "category": CHANNEL_CATEGORY}

# Message types.
MESSAGE_DEFAULT = 0
MESSAGE_REPLY = 19

PRESENCE_STATUSES = ("online", "idle", "dnd", "offline")


@dataclass(slots=True, eq=False)
class User:
    """A Discord user (a human or a bot account)."""

    id: int
    username: str
    global_name: str | None = None
    avatar: str | None = None
    discriminator: str = "0"
    bot: bool = False
    public_flags: int = 0
    banner: str | None = None
    accent_color: int | None = None


@dataclass(slots=True, eq=False)
class Bot:
    """A bot: one token, its own user and application, and the privileged intents it was granted."""

    token: str
    user: User
    application_id: int
    owner_id: int
    #: Privileged intent bits (GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT) granted to it.
    granted_intents: int = PRIVILEGED_INTENTS
    revoked: bool = False
    session_start_total: int = 1000
    session_starts_remaining: int = 1000
    #: Clock reading at which the current session-start window began (None: no IDENTIFY yet).
    session_window_start: float | None = None
    verify_key: str = ""

    @property
    def id(self) -> int:
        """The bot user's id."""
        return self.user.id

    @property
    def application_flags(self) -> int:
        """Discord's application flags for the granted privileged intents."""
        flags = 0
        if self.granted_intents & INTENT_GUILD_PRESENCES:
            flags |= APP_FLAG_GATEWAY_PRESENCE_LIMITED
        if self.granted_intents & INTENT_GUILD_MEMBERS:
            flags |= APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED
        if self.granted_intents & INTENT_MESSAGE_CONTENT:
            flags |= APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED
        return flags


@dataclass(slots=True, eq=False)
class Role:
    """A guild role; the @everyone role's id is the guild's id."""

    id: int
    name: str
    position: int
    permissions: int = 0
    color: int = 0
    hoist: bool = False
    mentionable: bool = False
    managed: bool = False
    #: Discord's role tags, e.g. ``{"bot_id": "123"}`` or ``{"premium_subscriber": None}``.
    tags: dict[str, Any] | None = None


@dataclass(slots=True, eq=False)
class Overwrite:
    """A channel permission overwrite (``type`` 0 = role, 1 = member)."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0


@dataclass(slots=True, eq=False)
class Message:
    """A message in a guild text channel."""

    id: int
    channel_id: int
    guild_id: int
    author: User
    content: str
    type: int = MESSAGE_DEFAULT
    edited_ms: int | None = None
    reference_id: int | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    mention_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    pinned: bool = False
    tts: bool = False
    nonce: int | str | None = None
    flags: int = 0

    @property
    def created_ms(self) -> int:
        """When the message was sent (from its snowflake)."""
        return snowflake_ms(self.id)


@dataclass(slots=True, eq=False)
class Channel:
    """A guild channel (text, voice or category).  Text channels hold their messages by id."""

    id: int
    guild_id: int
    type: int
    name: str
    position: int
    parent_id: int | None = None
    topic: str | None = None
    nsfw: bool = False
    rate_limit_per_user: int = 0
    bitrate: int = 64000
    user_limit: int = 0
    overwrites: list[Overwrite] = field(default_factory=list)
    #: Message ids in increasing order (the order of a channel's history) ...
    message_ids: list[int] = field(default_factory=list)
    #: ... and the messages by id.
    messages: dict[int, Message] = field(default_factory=dict)

    @property
    def last_message_id(self) -> int | None:
        """The newest message's id (None for an empty channel)."""
        return self.message_ids[-1] if self.message_ids else None

    def add_message(self, message: Message) -> None:
        """Insert ``message`` keeping ids sorted (appending in the usual case of a new id)."""
        if not self.message_ids or message.id > self.message_ids[-1]:
            self.message_ids.append(message.id)
        else:
            bisect.insort(self.message_ids, message.id)
        self.messages[message.id] = message

    def remove_message(self, message_id: int) -> None:
        """Forget a message (no-op when it is not here)."""
        if self.messages.pop(message_id, None) is not None:
            index = bisect.bisect_left(self.message_ids, message_id)
            del self.message_ids[index]

    def history(
        self,
        limit: int,
        *,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
    ) -> list[Message]:
        """Up to ``limit`` messages, newest first, as Discord's Get Channel Messages returns them.

        ``before``/``after`` exclude the given id; ``after`` yields the ``limit`` messages
        right after it; ``around`` yields the message itself (if it exists) with up to
        ``limit // 2`` newer ones and the rest older.  No cursor means the newest ones.
        """
        ids = self.message_ids
        if around is not None:
            newer = limit // 2
            pivot = bisect.bisect_right(ids, around)  # just past `around` itself
            newer_ids = ids[pivot : pivot + newer]
            older_ids = ids[max(0, pivot - (limit - len(newer_ids))) : pivot]
            chosen = older_ids + newer_ids
        elif after is not None:
            start = bisect.bisect_right(ids, after)
            chosen = ids[start : start + limit]
        else:
            end = len(ids) if before is None else bisect.bisect_left(ids, before)
            chosen = ids[max(0, end - limit) : end]
        messages = self.messages
        return [messages[i] for i in reversed(chosen)]


@dataclass(slots=True, eq=False)
class Member:
    """A user's membership in one guild."""

    user: User
    joined_ms: int
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    avatar: str | None = None
    premium_since_ms: int | None = None
    deaf: bool = False
    mute: bool = False
    pending: bool = False
    flags: int = 0
    communication_disabled_until_ms: int | None = None
    #: Presence status shown to bots with GUILD_PRESENCES ("online", "idle", "dnd", "offline").
    status: str = "offline"

    @property
    def id(self) -> int:
        """The member's user id."""
        return self.user.id


@dataclass(slots=True, eq=False)
class Guild:
    """A guild: roles and channels in order, members in join order, the bots that are in it."""

    id: int
    name: str
    owner_id: int
    icon: str | None = None
    description: str | None = None
    roles: list[Role] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    #: Members by user id, in join order; ``len(members)`` is the member count (bots included).
    members: dict[int, Member] = field(default_factory=dict)
    #: User ids of the bots that are in this guild.
    bots: set[int] = field(default_factory=set)
    system_channel_id: int | None = None
    rules_channel_id: int | None = None
    afk_channel_id: int | None = None
    verification_level: int = 1
    preferred_locale: str = "en-US"
    premium_tier: int = 0
    _sorted_members: list[Member] | None = None

    @property
    def member_count(self) -> int:
        """Members including bots (Discord's ``member_count``)."""
        return len(self.members)

    def role(self, role_id: int) -> Role | None:
        """The role with this id, or None."""
        for role in self.roles:
            if role.id == role_id:
                return role
        return None

    def channel(self, channel_id: int) -> Channel | None:
        """The channel with this id, or None."""
        for channel in self.channels:
            if channel.id == channel_id:
                return channel
        return None

    def members_sorted(self) -> list[Member]:
        """Members ordered by user id, as Discord's List Guild Members paginates them (cached)."""
        if self._sorted_members is None:
            self._sorted_members = sorted(self.members.values(), key=lambda m: m.user.id)
        return self._sorted_members

    def members_changed(self) -> None:
        """Drop caches after a member joined or left."""
        self._sorted_members = None

    def search_members(self, query: str, limit: int) -> list[Member]:
        """Members whose username or nick starts with ``query`` (case-insensitive).

        Ordered by user id; ``limit <= 0`` means no limit.
        """
        needle = query.casefold()
        found: list[Member] = []
        for member in self.members_sorted():
            user = member.user
            if user.username.casefold().startswith(needle) or (
                member.nick is not None and member.nick.casefold().startswith(needle)
            ):
                found.append(member)
                if 0 < limit <= len(found):
                    break
        return found
