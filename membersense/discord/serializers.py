"""Discord objects → MemberSense JSON: one serializer per object.

Members are kept as small immutable :class:`MemberRecord` tuples built from
Discord's own member JSON (cheap to copy, safe to hand to another thread) and
serialized off the loop. Channels are serialized on the loop from discord.py's
cached channel objects (a guild has few). Messages are serialized from
Discord's own JSON, as the REST API and the gateway send it.

Field names and shapes follow the original service's web client:
``displayName``, ``role`` (highest role) and ``author.name`` are what it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import discord
import orjson

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
    "role_ids",
    "serialize_member",
    "member_fragment",
    "serialize_channel",
    "channel_kind",
    "serialize_message",
]

#: Where avatar and icon URLs point (``DISCORD_CDN_BASE``); process-wide, like discord.py's
#: REST base: the Discord service sets it from the settings when it is made.
CDN_BASE = "https://cdn.discordapp.com"


def use_cdn_base(base: str) -> None:
    """Build asset URLs on *base* from now on."""
    global CDN_BASE
    CDN_BASE = base.rstrip("/")


_AVATAR_SIZE = 1024


class MemberRecord(NamedTuple):
    """What MemberSense keeps of one guild member: a small immutable tuple.

    Built from Discord's member JSON (a chunk, GUILD_CREATE, a member event),
    never from discord.py objects; safe to hand to another thread.
    """

    id: int
    username: str
    global_name: str | None
    nick: str | None
    avatar: str | None  # user avatar hash
    guild_avatar: str | None  # per-guild avatar hash
    discriminator: str
    role_ids: tuple[int, ...]
    joined_at: str | None  # as Discord sent it (ISO 8601)
    bot: bool


class RoleRecord(NamedTuple):
    """A guild role: enough to name it, rank it and colour a name with it."""

    id: int
    name: str
    position: int
    color: int = 0  # 0: no colour of its own


def role_ids(roles: Iterable[str] | None) -> tuple[int, ...]:
    """Discord's role id strings as ints (what :func:`member_record` does by default)."""
    return tuple(int(r) for r in roles or ())


def member_record(
    data: Mapping[str, Any],
    previous: MemberRecord | None = None,
    roles_of: Callable[[list[str] | None], tuple[int, ...]] = role_ids,
) -> MemberRecord:
    """A :class:`MemberRecord` from Discord's guild member JSON.

    *previous*, when given, supplies what a partial payload (a member update)
    leaves out. *roles_of* turns the JSON's role ids into ints; a guild's
    member list passes one that shares the tuples, so 100 000 members with the
    same roles do not each hold a copy. This runs for every member of every
    chunk: it builds the tuple directly rather than through keyword arguments.
    """
    user = data["user"]
    if previous is not None:
        return _updated_record(previous, user, data, roles_of)
    discriminator = user.get("discriminator") or "0"
    return _make_record(
        (
            int(user["id"]),
            user.get("username") or "",
            user.get("global_name"),
            data.get("nick"),
            user.get("avatar"),
            data.get("avatar"),
            _DISCRIMINATORS.get(discriminator, discriminator),
            roles_of(data.get("roles")),
            data.get("joined_at"),
            user.get("bot") is True,
        )
    )


_make_record = MemberRecord._make
#: Nearly every user has "0" since Discord's username migration: one shared string.
_DISCRIMINATORS = {"0": "0"}


def _updated_record(
    previous: MemberRecord,
    user: Mapping[str, Any],
    data: Mapping[str, Any],
    roles_of: Callable[[list[str] | None], tuple[int, ...]],
) -> MemberRecord:
    changes: dict[str, Any] = {}
    for key in ("username", "global_name", "avatar"):
        if key in user:
            changes[key] = user[key] if key != "username" else user[key] or ""
    if "discriminator" in user:
        discriminator = user["discriminator"] or "0"
        changes["discriminator"] = _DISCRIMINATORS.get(discriminator, discriminator)
    if "bot" in user:
        changes["bot"] = user["bot"] is True
    for key, name in (("nick", "nick"), ("avatar", "guild_avatar"), ("joined_at", "joined_at")):
        if key in data:
            changes[name] = data[key]
    if "roles" in data:
        changes["role_ids"] = roles_of(data["roles"])
    return previous._replace(**changes)


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
        # Members share a few role sets: each is ranked once per snapshot, not per member.
        self._ranked: dict[tuple[int, ...], tuple[str, ...]] = {}
        self._colored: dict[tuple[int, ...], str | None] = {}

    def of(self, role_ids: tuple[int, ...]) -> tuple[str, ...]:
        """Names of *role_ids* (unknown ids skipped), highest first, ``@everyone`` last."""
        names = self._ranked.get(role_ids)
        if names is None:
            known = [rid for rid in role_ids if rid in self._rank and rid != self._guild_id]
            known.sort(key=self._rank.__getitem__)
            names = self._ranked[role_ids] = (*(self._names[rid] for rid in known), self.everyone)
        return names

    def color_of(self, role_ids: tuple[int, ...]) -> str | None:
        """``#rrggbb`` of the highest of *role_ids* that has a colour (as Discord colours names)."""
        if role_ids in self._colored:
            return self._colored[role_ids]
        coloured = [rid for rid in role_ids if rid in self._colors]
        color = (
            f"#{self._colors[min(coloured, key=self._rank.__getitem__)]:06x}" if coloured else None
        )
        self._colored[role_ids] = color
        return color


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
        return (
            f"{CDN_BASE}/guilds/{guild_id}/users/{user_id}/avatars/"
            f"{guild_avatar}.{ext}?size={_AVATAR_SIZE}"
        )
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


def js_timestamp(value: datetime | str | None) -> str | None:
    """ISO 8601 with milliseconds and ``Z``, as JavaScript's ``Date.toJSON()`` writes it.

    Takes a datetime or Discord's ISO 8601 text.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.endswith("+00:00") and len(value) >= 25 and value[10] == "T":
            # Discord's own form (2024-03-05T06:07:08.912345+00:00): cut it rather than
            # parse it; a snapshot does this for every member.
            millis = (value[20:-6] + "000")[:3] if value[19] == "." else "000"
            return f"{value[:19]}.{millis}Z"
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    value = value.astimezone(UTC) if value.tzinfo else value
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def serialize_member(record: MemberRecord, roles: RoleNames, guild_id: int) -> dict[str, Any]:
    """One member as ``GET /api/members`` returns it."""
    names = roles.of(record.role_ids)
    return {
        "id": str(record.id),
        "username": record.username,
        "displayName": record.nick or record.global_name or record.username,
        "avatar": avatar_url(
            record.id,
            record.avatar,
            discriminator=record.discriminator,
            guild_id=guild_id,
            guild_avatar=record.guild_avatar,
        ),
        "roles": names,
        "role": names[0],
        "joinedAt": js_timestamp(record.joined_at),
        "bot": record.bot,
        "roleColor": roles.color_of(record.role_ids),
    }


def member_fragment(record: MemberRecord, roles: RoleNames, guild_id: int) -> bytes:
    """:func:`serialize_member` as compact UTF-8 JSON, ready to be joined into a list."""
    return orjson.dumps(serialize_member(record, roles, guild_id))


# -- channels ---------------------------------------------------------------

_KIND_CLASSES: Mapping[str, tuple[type, ...]] = {
    "text": (discord.TextChannel,),  # includes announcement channels
    "voice": (discord.VoiceChannel, discord.StageChannel),
    "category": (discord.CategoryChannel,),
}


def channel_kind(channel: discord.abc.GuildChannel) -> str:
    """Which ``type`` filter of ``GET /api/channels`` *channel* belongs to (or ``other``)."""
    for kind, classes in _KIND_CLASSES.items():
        if isinstance(channel, classes):
            return kind
    return "other"


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
        "channelId": str(payload.get("channel_id", "")),
        "content": payload.get("content", ""),
        "author": {
            "id": str(author_id),
            "username": author.get("username", ""),
            "name": author.get("global_name") or author.get("username", ""),
            "avatar": avatar_url(
                author_id,
                author.get("avatar"),
                discriminator=str(author.get("discriminator") or "0"),
            ),
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
