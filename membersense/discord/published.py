"""Published state: what a bot's connection makes readable, built ahead of requests.

A connection publishes, per guild, a :class:`GuildView`: the guild's summary
(name, member count, icon), its channels (serialized, with the bot's
permissions in each) and its member :class:`~membersense.discord.snapshot.MemberSnapshot`.
Requests read only this: immutable values swapped in as a whole, so readers
take no lock and never touch the event loop.

:class:`Publisher` keeps one bot's :class:`BotView` current. Summaries and
channels are rebuilt on the loop (a guild has few channels); member snapshots
are rebuilt eagerly, off the loop and off the request path, on a builder
thread, whenever the member list changes. Rebuilds of one guild never overlap:
changes during a build are coalesced into one more build after it.

This is the seam where Redis mode puts the state where other processes can
read it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

import discord

from membersense.discord.members import GuildMembers
from membersense.discord.serializers import (
    RoleNames,
    RoleRecord,
    channel_kind,
    guild_icon_url,
    serialize_channel,
)
from membersense.discord.service import GuildSummary
from membersense.discord.snapshot import MemberSnapshot, build_snapshot

__all__ = ["BotView", "ChannelEntry", "GuildView", "Publisher", "guild_summary", "role_names"]

log = logging.getLogger("membersense.discord")

#: After a build, a burst of changes waits at most this long (and at least as long as
#: the build took) before the next one, so a busy 100 000-member guild cannot keep a
#: core rebuilding.
MAX_REBUILD_SPACING_S = 2.0


@dataclass(frozen=True, slots=True)
class ChannelEntry:
    """One channel as published: its API JSON and what the bot may do there."""

    data: Mapping[str, Any]
    kind: str  # "text", "voice", "category" or "other"
    readable: bool  # the bot may view it and read its history
    messageable: bool  # it has messages at all
    sendable: bool = False  # the bot may view it and send messages there


@dataclass(frozen=True, slots=True)
class GuildView:
    """One guild as a bot's connection published it."""

    summary: GuildSummary
    available: bool = True
    channels: tuple[ChannelEntry, ...] = ()
    channel_index: Mapping[int, ChannelEntry] = field(default_factory=dict)
    members: MemberSnapshot | None = None
    #: Wall-clock time at which Discord's cooldown lets the member list be asked for again.
    members_retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class BotView:
    """Everything one bot's connection published; guilds in order, the default one first."""

    guilds: Mapping[int, GuildView] = field(default_factory=dict)

    def summaries(self) -> tuple[GuildSummary, ...]:
        """The guilds a login lists: available ones, the default one first."""
        return tuple(view.summary for view in self.guilds.values() if view.available)


def guild_summary(guild: discord.Guild, members: GuildMembers | None) -> GuildSummary:
    """The guild as a login (and ``guild.update``) describes it; the member count is
    exact once the member list is loaded."""
    count = len(members) if members is not None and members.complete else guild.member_count
    return GuildSummary(
        str(guild.id),
        guild.name,
        count or 0,
        guild_icon_url(guild.id, guild.icon.key if guild.icon else None),
    )


def role_names(guild: discord.Guild) -> RoleNames:
    """A guild's role names, ranked (from discord.py's role cache, on the loop)."""
    return RoleNames(
        guild.id, [RoleRecord(r.id, r.name, r.position, r.colour.value) for r in guild.roles]
    )


def channel_entry(channel: discord.abc.GuildChannel, me: discord.Member | None) -> ChannelEntry:
    """One channel as published, its JSON saying whether the bot may post there (on the loop)."""
    readable = sendable = False
    if me is not None:
        permissions = channel.permissions_for(me)
        readable = permissions.view_channel and permissions.read_message_history
        sendable = permissions.view_channel and permissions.send_messages
    return ChannelEntry(
        {**serialize_channel(channel), "canSend": sendable},
        channel_kind(channel),
        readable,
        isinstance(channel, discord.abc.Messageable),
        sendable,
    )


class Publisher:
    """Keeps one bot's :class:`BotView` current (see the module docstring).

    Its ``publish_*`` methods run on the loop; :attr:`view` and
    :meth:`wait_for_members` are for any thread. *members_of(guild_id)* gives
    the guild's :class:`GuildMembers`; *builder* runs snapshot builds;
    *on_change(view)* hears of every new view (Redis mode mirrors it).
    """

    def __init__(
        self,
        *,
        members_of: Callable[[int], GuildMembers | None],
        builder: Executor,
        label: str,
        on_change: Callable[[BotView], None] = lambda view: None,
    ) -> None:
        self.view = BotView()
        self._on_change = on_change
        self._members_of = members_of
        self._builder = builder
        self._label = label
        self._changed = threading.Condition()
        self._dirty: set[int] = set()
        self._rebuilding: dict[int, asyncio.Task[None]] = {}
        self._closed = False

    def _replace(self, guilds: dict[int, GuildView]) -> None:
        view = BotView(guilds)
        with self._changed:
            self.view = view
            self._changed.notify_all()
        self._on_change(view)

    def _update(self, guild_id: int, **changes: Any) -> None:
        guilds = dict(self.view.guilds)
        current = guilds.get(guild_id)
        if current is None:
            return
        guilds[guild_id] = replace(current, **changes)
        self._replace(guilds)

    # -- loop side ---------------------------------------------------------------

    def publish_guild(self, guild: discord.Guild) -> None:
        """(Re)publish a guild's summary and channels from discord.py's cache."""
        summary = guild_summary(guild, self._members_of(guild.id))
        me = guild.me
        entries: list[ChannelEntry] = []
        for category, channels in guild.by_category():
            if category is not None:
                entries.append(channel_entry(category, me))
            entries.extend(channel_entry(channel, me) for channel in channels)
        index = {int(entry.data["id"]): entry for entry in entries}
        guilds = dict(self.view.guilds)
        current = guilds.get(guild.id)
        if current is None:
            guilds[guild.id] = GuildView(summary, not guild.unavailable, tuple(entries), index)
        else:
            guilds[guild.id] = replace(
                current,
                summary=summary,
                available=not guild.unavailable,
                channels=tuple(entries),
                channel_index=index,
            )
        self._replace(guilds)

    def publish_availability(self, guild_id: int, available: bool) -> None:
        """A guild went into an outage, or came out of one."""
        self._update(guild_id, available=available)

    def publish_members_retry(self, guild_id: int, retry_at: float | None) -> None:
        """Discord's cooldown delays the guild's member list until *retry_at* (None: no more)."""
        if guild_id in self.view.guilds and self.view.guilds[guild_id].members_retry_at != retry_at:
            self._update(guild_id, members_retry_at=retry_at)

    def forget_guild(self, guild_id: int) -> None:
        """The bot left the guild."""
        task = self._rebuilding.pop(guild_id, None)
        if task is not None:
            task.cancel()
        self._dirty.discard(guild_id)
        if guild_id in self.view.guilds:
            guilds = dict(self.view.guilds)
            del guilds[guild_id]
            self._replace(guilds)

    def set_order(self, guild_ids: list[int]) -> None:
        """List the guilds in this order (READY's: the first is the default guild)."""
        current = self.view.guilds
        guilds = {g: current[g] for g in guild_ids if g in current}
        guilds.update(current)
        self._replace(guilds)

    def publish_members(self, guild: discord.Guild) -> None:
        """The guild's member list changed: rebuild its snapshot soon, off the loop."""
        self._dirty.add(guild.id)
        task = self._rebuilding.get(guild.id)
        if task is None or task.done():
            self._rebuilding[guild.id] = asyncio.create_task(
                self._rebuild(guild), name=f"membersense-snapshot-{guild.id}"
            )

    async def _rebuild(self, guild: discord.Guild) -> None:
        loop = asyncio.get_running_loop()
        while guild.id in self._dirty and not self._closed:
            self._dirty.discard(guild.id)
            members = self._members_of(guild.id)
            view = self.view.guilds.get(guild.id)
            if members is None or view is None or not (members.complete or view.members):
                return
            # One loop step copies references to immutable records: cheap even for 100 000.
            records, version, roles = (
                list(members.records.values()),
                members.version,
                role_names(guild),
            )
            started = time.monotonic()
            snapshot = await loop.run_in_executor(
                self._builder, build_snapshot, version, guild.id, records, roles
            )
            elapsed = time.monotonic() - started
            current = self.view.guilds.get(guild.id)
            if current is None or self._closed:
                return
            if current.members is None or current.members.version <= snapshot.version:
                self._update(guild.id, members=snapshot)
            log.debug(
                "member snapshot built",
                extra={
                    "fields": {
                        "token": self._label,
                        "guild": guild.id,
                        "members": len(snapshot),
                        "ms": round(elapsed * 1000, 1),
                    }
                },
            )
            if guild.id in self._dirty:
                await asyncio.sleep(min(elapsed, MAX_REBUILD_SPACING_S))

    def close(self) -> list[asyncio.Task[None]]:
        """Stop rebuilding; wake waiting readers. The build tasks, to wait for."""
        self._closed = True
        tasks = [t for t in self._rebuilding.values() if not t.done()]
        for task in tasks:
            task.cancel()
        with self._changed:
            self._changed.notify_all()
        return tasks

    # -- any thread ------------------------------------------------------------------

    def wait_for_members(self, guild_id: int, timeout: float) -> GuildView | None:
        """The guild's view once it has a member snapshot; waits up to *timeout* seconds.

        None when the guild is not (or no longer) published; the view without
        members when the time ran out (or the connection closed).
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                view = self.view.guilds.get(guild_id)
                if view is None or view.members is not None or self._closed:
                    return view
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return view
                self._changed.wait(remaining)
