"""A guild's member list, serialized and compressed once per change.

:func:`build_snapshot` turns the member records of one guild into a
:class:`MemberSnapshot`: the whole list as one JSON array sorted by user id,
gzip-compressed, with its ETag, plus what a page (``after`` / ``limit``)
needs. It runs on a builder thread, off the event loop and off the request
path; requests only ever serve a finished snapshot.

What stays resident is the gzip copy (a 100 000-member list: about 28 MB of
JSON, 5 MB compressed) and two arrays of 8 bytes a member. The plain body is
kept too while it is small. So that a page can be cut out of the compressed
copy without inflating all of it, the deflate stream is fully flushed every
:data:`BLOCK_MEMBERS` members (a full flush byte-aligns the stream and resets
the compressor's history, at a cost of a few bytes): inflating from the start
of any block needs nothing before it.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

from membersense.discord.serializers import MemberRecord, RoleNames, member_fragment
from membersense.discord.service import JsonDocument

__all__ = ["BLOCK_MEMBERS", "MemberSnapshot", "build_snapshot"]

#: Members per independently inflatable block of the compressed list.
BLOCK_MEMBERS = 1000
#: Plain bodies up to this size are kept beside the gzip copy (a 10 000-member list
#: is about 3 MB); larger ones are inflated on the rare request that wants them plain.
PLAIN_LIMIT = 8 * 1024 * 1024
#: zlib's default level: 28 MB of member JSON in about half a second, once per change.
GZIP_LEVEL = 6

# A gzip member header (RFC 1952): magic, deflate, no flags, no mtime, no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass(frozen=True, slots=True, eq=False)
class MemberSnapshot:
    """One guild's member list, serialized once; immutable.

    *offsets[i]* is where member *i* starts in the plain body and
    *offsets[n]* its length; *blocks[b]* is where block *b* starts in the gzip
    copy and *blocks[-1]* where the last one ends.
    """

    version: int
    document: JsonDocument
    ids: array  # user ids, ascending
    offsets: array
    blocks: array

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
            return JsonDocument(etag, body=b"[]")
        # offsets[end] - 1 drops the comma (or the closing bracket) after the last member.
        begin, stop = self.offsets[start], self.offsets[end] - 1
        body = self.document.body
        if body is not None:
            return JsonDocument(etag, body=b"".join((b"[", body[begin:stop], b"]")))
        return JsonDocument(
            etag, body=b"".join((b"[", self._inflate(start, end, begin, stop), b"]"))
        )

    def _inflate(self, start: int, end: int, begin: int, stop: int) -> bytes:
        first, last = start // BLOCK_MEMBERS, (end - 1) // BLOCK_MEMBERS
        assert self.document.gzip is not None
        compressed = memoryview(self.document.gzip)[self.blocks[first] : self.blocks[last + 1]]
        raw = zlib.decompressobj(-zlib.MAX_WBITS).decompress(compressed)
        # Block 0 starts at "[", every later one at the comma before its first member.
        origin = 0 if first == 0 else self.offsets[first * BLOCK_MEMBERS] - 1
        return raw[begin - origin : stop - origin]

    def fragments(self) -> Sequence[bytes]:
        """Every member's JSON, in id order (for tests and diagnostics)."""
        body = self.document.plain()
        return [body[self.offsets[i] : self.offsets[i + 1] - 1] for i in range(len(self))]


def build_snapshot(
    version: int,
    guild_id: int,
    records: Iterable[MemberRecord],
    roles: RoleNames,
    *,
    level: int = GZIP_LEVEL,
    plain_limit: int = PLAIN_LIMIT,
) -> MemberSnapshot:
    """Serialize and compress *records* into a snapshot. Slow: run it off the loop."""
    members = sorted(records, key=itemgetter(0))
    ids = array("Q", (m.id for m in members))
    offsets = array("Q")
    blocks = array("Q")
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    digest = hashlib.blake2b(digest_size=16)
    compressed = [_GZIP_HEADER]
    position = len(_GZIP_HEADER)
    plain: list[bytes] | None = []
    raw_size = crc = 0
    for first in range(0, max(1, len(members)), BLOCK_MEMBERS):
        fragments = [
            member_fragment(m, roles, guild_id) for m in members[first : first + BLOCK_MEMBERS]
        ]
        raw_at = raw_size + 1  # past the "[" or the comma in front of each member
        for fragment in fragments:
            offsets.append(raw_at)
            raw_at += len(fragment) + 1
        piece = (b"[" if first == 0 else b",") + b",".join(fragments)
        if first + BLOCK_MEMBERS >= len(members):
            piece += b"]"
        blocks.append(position)
        chunk = deflate.compress(piece) + deflate.flush(zlib.Z_FULL_FLUSH)
        compressed.append(chunk)
        position += len(chunk)
        crc = zlib.crc32(piece, crc)
        raw_size += len(piece)
        digest.update(piece)
        if plain is not None:
            plain.append(piece)
            if raw_size > plain_limit:
                plain = None
    offsets.append(raw_size)
    blocks.append(position)
    compressed.append(deflate.flush(zlib.Z_FINISH))
    compressed.append(struct.pack("<II", crc, raw_size & 0xFFFFFFFF))
    document = JsonDocument(
        digest.hexdigest(),
        body=b"".join(plain) if plain is not None else None,
        gzip=b"".join(compressed),
    )
    return MemberSnapshot(version, document, ids, offsets, blocks)
