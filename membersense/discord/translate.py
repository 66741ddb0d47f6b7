"""Gateway dispatches → MemberSense events on the bus.

One :class:`EventTranslator` per bot connection turns what Discord sent
(member and message JSON, discord.py's channel and guild objects) into
:class:`~membersense.bus.Event` payloads in the shapes the REST endpoints
use, on the topic of that bot and guild. Delete and leave events carry ids
only. Runs on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import discord

from membersense.bus import EventBus, topic_of
from membersense.discord.published import channel_entry, role_names
from membersense.discord.serializers import (
    MemberRecord,
    serialize_member,
    serialize_message,
)
from membersense.discord.service import GuildSummary

__all__ = ["EventTranslator"]


class EventTranslator:
    """Publishes one bot's events (see the module docstring)."""

    def __init__(self, bus: EventBus, fingerprint: str) -> None:
        self._bus = bus
        self._fingerprint = fingerprint

    def topic(self, guild_id: int | str) -> str:
        """This bot's topic for a guild."""
        return topic_of(self._fingerprint, guild_id)

    def _publish(self, guild_id: int | str, type: str, data: Mapping[str, Any]) -> None:
        self._bus.publish(self.topic(guild_id), type, data)

    # -- members --------------------------------------------------------------------

    def member(self, type: str, guild: discord.Guild, record: MemberRecord) -> None:
        """``member.join`` or ``member.update``: the member as ``GET /api/members`` shows it."""
        self._publish(guild.id, type, serialize_member(record, role_names(guild), guild.id))

    def member_left(self, guild_id: int, user_id: int) -> None:
        """``member.leave``."""
        self._publish(guild_id, "member.leave", {"id": str(user_id)})

    # -- messages -------------------------------------------------------------------

    def message(self, type: str, data: Mapping[str, Any]) -> None:
        """``message.create`` or ``message.update`` from Discord's message JSON."""
        guild_id = data.get("guild_id")
        if guild_id is None or "id" not in data:
            return  # a direct message: no guild's business
        self._publish(guild_id, type, serialize_message(data))

    def message_deleted(self, data: Mapping[str, Any]) -> None:
        """``message.delete``, once per message (bulk deletes too)."""
        guild_id = data.get("guild_id")
        if guild_id is None:
            return
        ids = data.get("ids") or ([data["id"]] if "id" in data else [])
        for message_id in ids:
            self._publish(
                guild_id,
                "message.delete",
                {"id": str(message_id), "channelId": str(data.get("channel_id"))},
            )

    # -- channels and the guild ----------------------------------------------------------

    def channel(self, type: str, channel: discord.abc.GuildChannel) -> None:
        """``channel.create`` / ``channel.update`` (the channel's JSON) or ``channel.delete`` (its id)."""
        if type == "channel.delete":
            data: Mapping[str, Any] = {"id": str(channel.id)}
        else:  # as GET /api/channels shows it, the bot's permission to post included
            data = channel_entry(channel, channel.guild.me).data
        self._publish(channel.guild.id, type, data)

    def guild(self, summary: GuildSummary) -> None:
        """``guild.update``: the guild's summary (name, member count, icon, and its roles changed)."""
        self._publish(summary.id, "guild.update", summary.to_json())
