"""Member lists as MemberSense keeps them, and loading them over the gateway.

discord.py's own member cache is turned off (see :mod:`.compat`): each guild's
members live in a :class:`GuildMembers`, a dict of small immutable
:class:`~membersense.discord.serializers.MemberRecord` tuples built straight
from Discord's JSON. Everything here runs on the bridge's event loop.

:class:`MemberLoader` asks the gateway for a guild's whole list (op 8) once per
gateway session, when the guild arrives, unless its GUILD_CREATE already
carried every member. Discord allows one such request per guild every 30 s
and answers a second one with a ``RATE_LIMITED`` dispatch; the loader then
waits what Discord said and asks again, and anyone waiting for the list
learns at once that it is *cooling down* rather than waiting with it. A
reload (after a gateway session restarted without resuming) builds the new
list beside the old one, which keeps being served until the new one is whole.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from membersense.discord.serializers import MemberRecord, member_record, role_ids

__all__ = ["CHUNK_RETRY_S", "GuildMembers", "LoadState", "MemberLoader"]

log = logging.getLogger("membersense.discord")

#: How long a member request may go unanswered before it is sent again.
CHUNK_RETRY_S = 30.0


class GuildMembers:
    """One guild's members, by user id. Loop-only.

    *version* increases with every change; *complete* says whether the whole
    list has been loaded in this gateway session.
    """

    def __init__(self, guild_id: int) -> None:
        self.guild_id = guild_id
        self.records: dict[int, MemberRecord] = {}
        self.version = 0
        self.complete = False
        self._role_sets: dict[tuple[str, ...], tuple[int, ...]] = {}
        self._loading: dict[int, MemberRecord] | None = None  # a reload under way

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"<GuildMembers {self.guild_id} n={len(self.records)} complete={self.complete}>"

    def _roles_of(self, roles: list[str] | None) -> tuple[int, ...]:
        # Members share a few role sets: one tuple each, made once.
        key = tuple(roles) if roles else ()
        found = self._role_sets.get(key)
        if found is None:
            found = self._role_sets[key] = role_ids(key)
        return found

    def _targets(self) -> Iterable[dict[int, MemberRecord]]:
        # Events during a reload go to the list being built as well.
        return (self.records,) if self._loading is None else (self.records, self._loading)

    def upsert(self, data: Mapping[str, Any]) -> MemberRecord:
        """Add or update a member from Discord's JSON (a partial update keeps the rest)."""
        user_id = int(data["user"]["id"])
        record = member_record(data, self.records.get(user_id), self._roles_of)
        for target in self._targets():
            target[user_id] = record
        self.version += 1
        return record

    def remove(self, user_id: int) -> MemberRecord | None:
        """Forget a member; the record it had, if any."""
        removed = None
        for target in self._targets():
            removed = target.pop(user_id, None) or removed
        self.version += 1
        return removed

    def begin_load(self) -> None:
        """Start (again) loading the whole list; the current one is served meanwhile."""
        self.complete = False
        self._loading = {}

    def load(self, members: Iterable[Mapping[str, Any]]) -> None:
        """Add members of a chunk (or of GUILD_CREATE) to the list being loaded."""
        target = self._loading if self._loading is not None else self.records
        roles_of = self._roles_of
        for data in members:
            record = member_record(data, None, roles_of)
            target[record.id] = record

    def finish_load(self) -> None:
        """The whole list has arrived: it replaces the old one."""
        if self._loading is not None:
            self.records, self._loading = self._loading, None
        self.complete = True
        self.version += 1


@dataclass(eq=False)
class LoadState:
    """Where loading one guild's member list stands."""

    guild_id: int
    nonce: str = ""
    chunks_seen: set[int] = field(default_factory=set)
    #: Wall-clock time at which a cooled-down request is asked again (None: not cooling down).
    retry_at: float | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    answered: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    rate_limited: float | None = None  # retry_after of the latest RATE_LIMITED, not yet acted on


class MemberLoader:
    """Loads member lists over one gateway connection (see the module docstring).

    *request(guild_id, nonce)* sends op 8; *loaded(guild_id)* is called when a
    list is whole and *changed()* whenever a load's state changes (someone may
    be waiting for it).
    """

    def __init__(
        self,
        request: Callable[[int, str], Any],
        *,
        loaded: Callable[[int], None],
        changed: Callable[[], None],
        label: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._request = request
        self._loaded = loaded
        self._changed = changed
        self._label = label
        self._clock = clock
        self.guilds: dict[int, GuildMembers] = {}
        self._loads: dict[int, LoadState] = {}

    def members_of(self, guild_id: int) -> GuildMembers:
        """The guild's member list (an empty one for a guild seen for the first time)."""
        members = self.guilds.get(guild_id)
        if members is None:
            members = self.guilds[guild_id] = GuildMembers(guild_id)
        return members

    def settled(self, guild_id: int) -> bool:
        """Loaded, or waiting out Discord's cooldown: a login need not wait any longer."""
        members = self.guilds.get(guild_id)
        if members is None:
            return False
        load = self._loads.get(guild_id)
        return members.complete or (load is not None and load.retry_at is not None)

    def retry_at(self, guild_id: int) -> float | None:
        """When a cooled-down load asks again (wall clock), or None."""
        load = self._loads.get(guild_id)
        return load.retry_at if load is not None else None

    def session_started(self) -> None:
        """A new gateway session (READY without resume): every list must be loaded again."""
        for load in self._loads.values():
            if load.task is not None:
                load.task.cancel()
        self._loads.clear()
        for members in self.guilds.values():
            members.begin_load()

    def guild_arrived(self, guild_id: int, data: Mapping[str, Any]) -> None:
        """A GUILD_CREATE: take its members; request the rest unless it had them all."""
        members = self.members_of(guild_id)
        if members.complete and guild_id in self._loads:
            return  # already loaded in this session (an outage ended)
        members.begin_load()
        inline = data.get("members") or ()
        members.load(inline)
        if len(inline) >= int(data.get("member_count") or 0):
            members.finish_load()  # a small guild: GUILD_CREATE had everyone
            self._loads[guild_id] = LoadState(guild_id)
            self._loaded(guild_id)
            self._changed()
            return
        self._start(guild_id)

    def guild_removed(self, guild_id: int) -> None:
        """The bot left the guild: stop loading it and forget its members."""
        load = self._loads.pop(guild_id, None)
        if load is not None and load.task is not None:
            load.task.cancel()
        self.guilds.pop(guild_id, None)

    def _start(self, guild_id: int) -> None:
        load = self._loads.get(guild_id)
        if load is not None and load.task is not None and not load.task.done():
            return
        load = self._loads[guild_id] = LoadState(guild_id)
        load.task = asyncio.create_task(self._run(load), name=f"membersense-members-{guild_id}")

    async def _run(self, load: LoadState) -> None:
        """Ask for the list until it is whole (or the load is cancelled)."""
        try:
            while True:
                load.nonce = secrets.token_hex(8)
                load.chunks_seen.clear()
                load.answered.clear()
                load.rate_limited = None
                try:
                    await self._request(load.guild_id, load.nonce)
                except ConnectionError:
                    pass  # the gateway is reconnecting; ask again in a moment
                try:
                    await asyncio.wait_for(load.answered.wait(), CHUNK_RETRY_S)
                except TimeoutError:
                    continue  # unanswered: ask again
                if load.rate_limited is None:
                    return  # the whole list arrived
                delay = load.rate_limited
                load.retry_at = self._clock() + delay
                log.info(
                    "member request rate limited",
                    extra={
                        "fields": {
                            "token": self._label,
                            "guild": load.guild_id,
                            "retry_after": delay,
                        }
                    },
                )
                self._changed()
                await asyncio.sleep(delay)
        finally:
            if load.task is asyncio.current_task():
                load.task = None

    def chunk(self, data: Mapping[str, Any]) -> None:
        """A GUILD_MEMBERS_CHUNK."""
        guild_id = int(data["guild_id"])
        load = self._loads.get(guild_id)
        members = self.guilds.get(guild_id)
        if load is None or members is None or data.get("nonce") != load.nonce:
            return  # not an answer to our current request
        members.load(data.get("members") or ())
        load.chunks_seen.add(int(data.get("chunk_index", 0)))
        if len(load.chunks_seen) >= int(data.get("chunk_count", 1)):
            members.finish_load()
            load.retry_at = None
            load.answered.set()
            self._loaded(guild_id)
            self._changed()

    def rate_limited(self, data: Mapping[str, Any]) -> None:
        """A RATE_LIMITED dispatch: Discord refused a member request for now."""
        if data.get("opcode") != 8:
            return
        meta = data.get("meta") or {}
        try:
            guild_id = int(meta["guild_id"])
            retry_after = float(data["retry_after"])
        except (KeyError, TypeError, ValueError):
            return
        load = self._loads.get(guild_id)
        if load is None or (meta.get("nonce") not in (None, load.nonce)):
            return
        load.rate_limited = max(0.0, retry_after)
        load.answered.set()

    def close(self) -> list[asyncio.Task[None]]:
        """Cancel every load; the tasks, to wait for."""
        tasks = [load.task for load in self._loads.values() if load.task is not None]
        for task in tasks:
            task.cancel()
        return tasks
