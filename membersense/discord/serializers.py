"""Discord objects → MemberSense JSON: one serializer per object.

Members are taken from discord.py's cache on the event loop as small
immutable :class:`MemberRecord` tuples (cheap to copy, safe to hand to
another thread) and serialized off the loop. Channels are serialized on the
loop from discord.py's cached channel objects (a guild has few). Messages are
serialized from Discord's own JSON payloads, as the REST API returns them.

Field names and shapes follow the original service's web client:
``displayName``, ``role`` (highest role) and ``author.name`` are what it reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

import discord

__all__ = [
    "CDN_BASE",
    "use_cdn_base",
    "MemberRecord",
    "RoleRecord",
    "RoleNames",
    "avatar_url",
    "guild_icon_url",
    "js_timestamp",
    "member_record",
    "role_record",
    "serialize_member",
    "member_fragment",
    "serialize_channel",
    "channel_kind_matches",
    "serialize_message",
]

#: Where avatar and icon URLs point (``DISCORD_CDN_BASE``); process-wide, like discord.py's
#: REST base, and set with it by :func:`membersense.discord.endpoints.use_endpoints`.
CDN_BASE = "https://cdn.discordapp.com"


def use_cdn_base(base: str) -> None:
    """Build asset URLs on *base* from now on."""
    global CDN_BASE
    CDN_BASE = base.rstrip("/")


_AVATAR_SIZE = 1024

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class MemberRecord(NamedTuple):
    """What MemberSense needs of one guild member, copied out of discord.py's cache."""

    id: int
    username: str
    global_name: str | None
    nick: str | None
    avatar: str | None  # user avatar hash
    guild_avatar: str | None  # per-guild avatar hash
    discriminator: str
    role_ids: tuple[int, ...]
    joined_at: datetime | None
    bot: bool


class RoleRecord(NamedTuple):
    """A guild role: enough to name it, rank it and colour a name with it."""

    id: int
    name: str
    position: int
    color: int = 0  # 0: no colour of its own


def member_record(member: discord.Member) -> MemberRecord:
    """Copy *member* into a :class:`MemberRecord`. Runs on the event loop.

    Reads the hashes and role ids behind discord.py's properties (``avatar``
    and ``roles`` would build Asset and sorted Role lists per member, which is
    most of the cost for a 10 000-member guild); tests pin them to the public
    properties.
    """
    user = member._user
    return MemberRecord(
        member.id,
        user.name,
        user.global_name,
        member.nick,
        user._avatar,
        member._avatar,
        user.discriminator,
        tuple(member._roles),
        member.joined_at,
        user.bot,
    )


def role_record(role: discord.Role) -> RoleRecord:
    """Copy *role* into a :class:`RoleRecord`. Runs on the event loop."""
    return RoleRecord(role.id, role.name, role.position, role.colour.value)


class RoleNames:
    """Names of a guild's roles, ranked as Discord ranks them (position, then id)."""

    def __init__(self, guild_id: int, roles: Iterable[RoleRecord]) -> None:
        ranked = sorted(roles, key=lambda r: (r.position, r.id), reverse=True)
        self._rank = {role.id: rank for rank, role in enumerate(ranked)}
        self._names = {role.id: role.name for role in ranked}
        self._colors = {role.id: role.color for role in ranked if role.color}
        # @everyone's id is the guild's id; every member has it.
        self.everyone = self._names.get(guild_id, "@everyone")
        self._guild_id = guild_id

    def of(self, role_ids: Iterable[int]) -> list[str]:
        """Names of *role_ids* (unknown ids skipped), highest first, ``@everyone`` last."""
        known = [rid for rid in role_ids if rid in self._rank and rid != self._guild_id]
        known.sort(key=self._rank.__getitem__)
        return [self._names[rid] for rid in known] + [self.everyone]

    def color_of(self, role_ids: Iterable[int]) -> str | None:
        """``#rrggbb`` of the highest of *role_ids* that has a colour (as Discord colours names)."""
        coloured = [rid for rid in role_ids if rid in self._colors]
        if not coloured:
            return None
        return f"#{self._colors[min(coloured, key=self._rank.__getitem__)]:06x}"


def avatar_url(
    user_id: int,
    avatar: str | None,
    *,
    discriminator: str = "0",
    guild_id: int | None = None,
    guild_avatar: str | None = None,
) -> str:
    """The CDN URL of the avatar Discord shows: per-guild, else the user's, else a default one."""
    if guild_avatar and guild_id is not None:
        ext = "gif" if guild_avatar.startswith("a_") else "png"
        return (f"{CDN_BASE}/guilds/{guild_id}/users/{user_id}/avatars/"
                f"{guild_avatar}.{ext}?size={_AVATAR_SIZE}")
    if avatar:
        ext = "gif" if avatar.startswith("a_") else "png"
        return f"{CDN_BASE}/avatars/{user_id}/{avatar}.{ext}?size={_AVATAR_SIZE}"
    # Default avatars: by id for migrated usernames, by discriminator for legacy ones.
    index = (user_id >> 22) % 6 if discriminator in ("0", "") else int(discriminator) % 5
    return f"{CDN_BASE}/embed/avatars/{index}.png"


def guild_icon_url(guild_id: int, icon: str | None) -> str | None:
    """The CDN URL of a guild's icon, or None when it has none."""
    if not icon:
        return None
    ext = "gif" if icon.startswith("a_") else "png"
    return f"{CDN_BASE}/icons/{guild_id}/{icon}.{ext}?size={_AVATAR_SIZE}"


def js_timestamp(value: datetime | None) -> str | None:
    """ISO 8601 with milliseconds and ``Z``, as JavaScript's ``Date.toJSON()`` writes it."""
    if value is None:
        return None
    value = value.astimezone(timezone.utc) if value.tzinfo else value
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def serialize_member(record: MemberRecord, roles: RoleNames, guild_id: int) -> dict[str, Any]:
    """One member as ``GET /api/members`` returns it."""
    names = roles.of(record.role_ids)
    return {
        "id": str(record.id),
        "username": record.username,
        "displayName": record.nick or record.global_name or record.username,
        "avatar": avatar_url(record.id, record.avatar, discriminator=record.discriminator,
                             guild_id=guild_id, guild_avatar=record.guild_avatar),
        "roles": names,
        "role": names[0],
        "joinedAt": js_timestamp(record.joined_at),
        "bot": record.bot,
        "roleColor": roles.color_of(record.role_ids),
    }


def member_fragment(record: MemberRecord, roles: RoleNames, guild_id: int) -> bytes:
    """:func:`serialize_member` as compact UTF-8 JSON, ready to be joined into a list."""
    return _compact(serialize_member(record, roles, guild_id)).encode()


# -- channels ---------------------------------------------------------------

_KIND_CLASSES: Mapping[str, tuple[type, ...]] = {
    "text": (discord.TextChannel,),  # includes announcement channels
    "voice": (discord.VoiceChannel, discord.StageChannel),
    "category": (discord.CategoryChannel,),
}


def channel_kind_matches(channel: discord.abc.GuildChannel, kind: str) -> bool:
    """Whether *channel* belongs to the ``type`` filter *kind* (``all`` matches everything)."""
    return kind == "all" or isinstance(channel, _KIND_CLASSES[kind])


def serialize_channel(channel: discord.abc.GuildChannel) -> dict[str, Any]:
    """One channel as ``GET /api/channels`` returns it. Runs on the event loop."""
    return {
        "id": str(channel.id),
        "name": channel.name,
        "type": str(channel.type),
        "parentId": str(channel.category_id) if channel.category_id else None,
        "position": channel.position,
        "topic": getattr(channel, "topic", None),
    }


# -- messages ---------------------------------------------------------------

def _epoch_ms(iso: str | None) -> int | None:
    if not iso:
        return None
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def serialize_message(payload: Mapping[str, Any]) -> dict[str, Any]:
    """One message from Discord's message JSON, as ``GET /api/messages`` returns it."""
    author = payload.get("author") or {}
    author_id = int(author.get("id", 0))
    reference = payload.get("message_reference") or {}
    return {
        "id": str(payload["id"]),
        "content": payload.get("content", ""),
        "author": {
            "id": str(author_id),
            "username": author.get("username", ""),
            "name": author.get("global_name") or author.get("username", ""),
            "avatar": avatar_url(author_id, author.get("avatar"),
                                 discriminator=str(author.get("discriminator") or "0")),
        },
        "timestamp": _epoch_ms(payload.get("timestamp")),
        "editedTimestamp": _epoch_ms(payload.get("edited_timestamp")),
        "attachments": [
            {
                "id": str(a.get("id")),
                "filename": a.get("filename"),
                "url": a.get("url"),
                "size": a.get("size"),
                "contentType": a.get("content_type"),
            }
            for a in payload.get("attachments") or ()
        ],
        "embeds": len(payload.get("embeds") or ()),
        "replyTo": str(reference["message_id"]) if reference.get("message_id") else None,
    }
