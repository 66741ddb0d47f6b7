"""Serialized member lists, served without touching the event loop.

Each guild a bot is in has a :class:`GuildCache`. The event loop bumps its
``version`` whenever discord.py reports a change that shows in the member
list (a member joined, changed or left, a user renamed, a role changed). A
request thread serves the current :class:`MemberSnapshot` when its version is
still the cache's; otherwise one thread (single flight) copies the members
out of discord.py on the loop as :class:`MemberData`, serializes them here,
off the loop, and swaps the new snapshot in. Snapshots are immutable, so
readers never need a lock.

A snapshot keeps the whole list as one JSON body, sorted by user id, plus
the offset of every member in it: a page (``after`` / ``limit``) is a
bisect and one slice of that body, not a re-serialization.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import threading
from array import array
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from membersense.discord.serializers import MemberRecord, RoleNames, RoleRecord, member_fragment
from membersense.discord.service import JsonDocument

__all__ = ["GuildCache", "MemberData", "MemberSnapshot", "build_snapshot"]

#: gzip level of the whole-list body: 6 is zlib's default balance (a 10 000-member
#: list: 2.9 MB -> 0.6 MB in about 50 ms, once per change).
GZIP_LEVEL = 6
#: Bodies smaller than this are not worth a compressed copy.
GZIP_MIN_BYTES = 1024


@dataclass(frozen=True, slots=True)
class MemberData:
    """Members and roles of one guild, copied on the loop at cache ``version``."""

    guild_id: int
    version: int
    members: list[MemberRecord]
    roles: list[RoleRecord]


@dataclass(frozen=True, slots=True, eq=False)
class MemberSnapshot:
    """One guild's member list, serialized once; immutable."""

    version: int
    document: JsonDocument  # the whole list
    ids: array  # user ids, ascending
    offsets: array  # offsets[i]: where member i starts in the body; offsets[n]: len(body)

    def __len__(self) -> int:
        return len(self.ids)

    def page(self, limit: int | None, after: int | None) -> JsonDocument:
        """At most *limit* members with an id above *after* (None: no bound)."""
        n = len(self.ids)
        start = 0 if after is None else bisect.bisect_right(self.ids, after)
        end = n if limit is None else min(n, start + limit)
        if start == 0 and end == n:
            return self.document
        etag = f"{self.document.etag}.{start}.{end}"
        if start >= end:
            return JsonDocument(b"[]", etag)
        body = memoryview(self.document.body)
        # offsets[end] - 1 drops the comma (or the closing bracket) after the last member.
        return JsonDocument(b"".join((b"[", body[self.offsets[start]:self.offsets[end] - 1], b"]")),
                            etag)


def build_snapshot(data: MemberData) -> MemberSnapshot:
    """Serialize *data* into a snapshot. Runs off the event loop (it is the slow part)."""
    roles = RoleNames(data.guild_id, data.roles)
    members = sorted(data.members, key=lambda m: m.id)
    fragments = [member_fragment(m, roles, data.guild_id) for m in members]
    offsets = array("Q")
    position = 1  # after "["
    for fragment in fragments:
        offsets.append(position)
        position += len(fragment) + 1  # the fragment and its "," (or "]")
    offsets.append(position)
    body = b"[" + b",".join(fragments) + b"]"
    etag = hashlib.blake2b(body, digest_size=16).hexdigest()
    # Compressed once here rather than per response: browsers always accept gzip,
    # and a whole guild's list is megabytes of JSON.
    compressed = gzip.compress(body, GZIP_LEVEL, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
    return MemberSnapshot(
        version=data.version,
        document=JsonDocument(body, etag, compressed),
        ids=array("Q", (m.id for m in members)),
        offsets=offsets,
    )


@dataclass(eq=False)
class GuildCache:
    """The member list cache of one guild of one bot connection.

    ``version`` is written only on the event loop; ``snapshot`` and
    ``rebuilding`` only under ``lock``. ``complete`` (members chunked since
    the gateway's last READY) and the chunking state are loop-only.
    """

    guild_id: int
    version: int = 0
    snapshot: MemberSnapshot | None = None
    complete: bool = False
    #: Loop time at which a rate-limited member request will be retried.
    retry_at: float | None = None
    chunk_task: Any = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    rebuilding: Future[MemberSnapshot] | None = field(default=None, repr=False)

    def invalidate(self) -> None:
        """Mark every snapshot taken so far as stale. Loop thread only."""
        self.version += 1

    def fresh_snapshot(self) -> MemberSnapshot | None:
        """The current snapshot if nothing changed since it was taken."""
        snapshot = self.snapshot
        if snapshot is not None and snapshot.version == self.version:
            return snapshot
        return None


def fragments_of(snapshot: MemberSnapshot) -> Sequence[bytes]:
    """Every member's JSON, in id order (for tests and diagnostics)."""
    body = snapshot.document.body
    return [body[snapshot.offsets[i]:snapshot.offsets[i + 1] - 1] for i in range(len(snapshot))]
