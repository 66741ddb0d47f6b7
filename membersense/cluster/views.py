"""Published state in Redis: the owner writes its bots' views; every process reads them.

The process that owns a bot (:mod:`membersense.cluster.leases`) mirrors what
its connection publishes (:class:`~membersense.discord.published.BotView`)
into Redis: a small hash per bot (a version, the connection's state, and per
guild its summary, channels with the bot's permissions, and which member
snapshot is current) and a hash per guild's member snapshot (the gzip copy,
its ETag and page index), written only when that snapshot changed. Writes go
through the :class:`~membersense.cluster.writer.Writer` (off the event loop)
and a Lua script that refuses them unless the writer still holds the bot's
lease: a stalled former owner never overwrites a newer owner's state.

:class:`ViewCache` gives any process a local copy: a request reads the bot's
version (one small ``HGET``) and uses its copy while the version is the same,
fetching the view again (and a member snapshot only when its ETag changed)
when it is not. Everything expires ``SESSION_TIMEOUT`` after the owner last
refreshed it, and is deleted when the bot's last session ends.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

from membersense.cluster.connection import RedisConnection
from membersense.cluster.writer import Writer
from membersense.discord import errors as discord_errors
from membersense.discord.errors import Failure
from membersense.discord.published import BotView, ChannelEntry, GuildView
from membersense.discord.service import GuildSummary, JsonDocument
from membersense.discord.snapshot import PLAIN_LIMIT, MemberSnapshot

__all__ = ["PublishedBot", "ViewCache", "ViewMirror"]

#: How long withdrawing a bot waits for its queued writes.
FLUSH_WAIT_S = 5.0

#: KEYS: lease, then the hashes to write. ARGV: lease token, ttl ms, then for each hash:
#: how many field/value items follow (0: only refresh its TTL), and those items.
_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[2])
local i = 3
for k = 2, #KEYS do
  local n = tonumber(ARGV[i])
  i = i + 1
  if n > 0 then redis.call('HSET', KEYS[k], unpack(ARGV, i, i + n - 1)) end
  i = i + n
  redis.call('PEXPIRE', KEYS[k], ttl)
end
return 1
"""

#: KEYS: lease, then keys to delete. ARGV: lease token.
_DELETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end
return 1
"""


def _failure_json(failure: Failure | None) -> str:
    if failure is None:
        return ""
    return json.dumps(
        {
            "kind": failure.kind.__name__,
            "message": failure.message,
            "retry_after": failure.retry_after,
        }
    )


def _failure_from(text: str) -> Failure | None:
    if not text:
        return None
    data = json.loads(text)
    kind = getattr(discord_errors, data.get("kind", ""), None)
    if not (isinstance(kind, type) and issubclass(kind, discord_errors.DiscordError)):
        kind = discord_errors.DiscordUnavailable
    return Failure(kind, data.get("message") or kind.default_message, data.get("retry_after"))


def _guild_json(view: GuildView) -> dict[str, Any]:
    return {
        "summary": {
            "id": view.summary.id,
            "name": view.summary.name,
            "memberCount": view.summary.member_count,
            "iconURL": view.summary.icon_url,
        },
        "available": view.available,
        "channels": [
            [dict(c.data), c.kind, c.readable, c.messageable, c.sendable] for c in view.channels
        ],
        "members": view.members.document.etag if view.members is not None else None,
        "retryAt": view.members_retry_at,
    }


class ViewMirror:
    """The owner's side: mirror each owned bot's view into Redis, fenced by its lease."""

    def __init__(
        self,
        connection: RedisConnection,
        writer: Writer,
        *,
        retention_s: float,
        lease_token: Callable[[str], str | None],
    ) -> None:
        self._redis = connection
        self._keys = connection.keys
        self._writer = writer
        self._ttl_ms = max(1000, int(retention_s * 1000))
        self._lease_token = lease_token  # the lease value this process holds for a bot
        self._write = connection.script(_WRITE)
        self._delete = connection.script(_DELETE)
        self._written: dict[str, dict[int, MemberSnapshot]] = {}  # bot -> guild -> snapshot
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def publish(self, bot: str, view: BotView, failure: Failure | None) -> None:
        """Mirror *view* (and a failure for good, if any). Never blocks: queued."""
        token = self._lease_token(bot)
        if token is None:
            return  # not ours (any more)
        with self._lock:
            version = self._versions[bot] = self._versions.get(bot, 0) + 1
            written = self._written.setdefault(bot, {})
            snapshots = {
                gid: g.members
                for gid, g in view.guilds.items()
                if g.members is not None and written.get(gid) is not g.members
            }
            written.update(snapshots)
        keys = [self._keys.lease(bot), self._keys.view(bot)]
        fields: list[Any] = [
            "version",
            f"{token}/{version}",
            "state",
            "failed" if failure is not None else "ready",
            "failure",
            _failure_json(failure),
            "guilds",
            json.dumps([[gid, _guild_json(g)] for gid, g in view.guilds.items()]),
        ]
        args: list[Any] = [token, self._ttl_ms, len(fields), *fields]
        for guild_id, snapshot in snapshots.items():
            assert snapshot is not None
            keys.append(self._keys.members(bot, guild_id))
            members = [
                "etag",
                snapshot.document.etag,
                "version",
                snapshot.version,
                "gzip",
                snapshot.document.gzip or b"",
                "ids",
                snapshot.ids.tobytes(),
                "offsets",
                snapshot.offsets.tobytes(),
                "blocks",
                snapshot.blocks.tobytes(),
            ]
            args += [len(members), *members]
        script = self._write
        self._writer.submit(lambda pipeline: script(keys=keys, args=args, client=pipeline))

    def refresh(self, bot: str, guild_ids: list[int]) -> None:
        """Keep the bot's published state alive another retention period (owner, sessions left)."""
        token = self._lease_token(bot)
        if token is None:
            return
        keys = [
            self._keys.lease(bot),
            self._keys.view(bot),
            *(self._keys.members(bot, gid) for gid in guild_ids),
        ]
        args = [token, self._ttl_ms, *([0] * (len(keys) - 1))]
        script = self._write
        self._writer.submit(lambda pipeline: script(keys=keys, args=args, client=pipeline))

    def withdraw(self, bot: str, guild_ids: list[int]) -> None:
        """Delete the bot's published state (its last session ended), while this process
        still holds the lease: writes queued before it land first. Blocks (the keeper's
        thread, not the loop)."""
        token = self._lease_token(bot)
        with self._lock:
            self._written.pop(bot, None)
        if token is None:
            return
        keys = [
            self._keys.lease(bot),
            self._keys.view(bot),
            *(self._keys.members(bot, gid) for gid in guild_ids),
        ]
        self._writer.flush(FLUSH_WAIT_S)
        self._redis.call(lambda: self._delete(keys=keys, args=[token]))

    def forget(self, bot: str) -> None:
        """This process no longer owns *bot*: the next owner writes everything afresh."""
        with self._lock:
            self._written.pop(bot, None)


class PublishedBot:
    """A bot's published state as one process's copy: its view, version and failure."""

    __slots__ = ("failure", "fetched", "version", "view")

    def __init__(
        self, version: str, view: BotView, failure: Failure | None, fetched: float
    ) -> None:
        self.version = version
        self.view = view
        self.failure = failure
        self.fetched = fetched


class ViewCache:
    """Every process's side: local copies of published views, revalidated by version.

    A copy checked less than *trust_s* ago is used without asking Redis: under load
    most requests then read nothing from Redis, and a change still shows everywhere
    within that time.
    """

    def __init__(
        self,
        connection: RedisConnection,
        *,
        trust_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = connection
        self._keys = connection.keys
        self._trust_s = trust_s
        self._clock = clock
        self._bots: dict[str, PublishedBot] = {}
        self._snapshots: dict[tuple[str, int], MemberSnapshot] = {}
        self._lock = threading.Lock()

    def get(self, bot: str, *, fresh: bool = False) -> PublishedBot | None:
        """The bot's published state (one small read when the copy is current; none while
        it was checked within the trust time, unless *fresh*)."""
        now = self._clock()
        cached = self._bots.get(bot)
        if cached is not None and not fresh and now - cached.fetched < self._trust_s:
            return cached
        version = self._redis.call(lambda: self._redis.client.hget(self._keys.view(bot), "version"))
        if version is None:
            self.forget(bot)
            return None
        version_text = version.decode() if isinstance(version, bytes) else str(version)
        if cached is not None and cached.version == version_text:
            cached.fetched = now
            return cached
        return self._fetch(bot)

    def _fetch(self, bot: str) -> PublishedBot | None:
        raw = self._redis.call(lambda: self._redis.client.hgetall(self._keys.view(bot)))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        guilds: dict[int, GuildView] = {}
        for guild_id, data in json.loads(fields.get("guilds") or "[]"):
            summary = data["summary"]
            # Whether the bot may send there (checked before POST /api/messages). A view an
            # older owner published has no such entry: let Discord decide (its 403 maps to ours).
            channels = tuple(
                ChannelEntry(c[0], c[1], c[2], c[3], c[4] if len(c) > 4 else c[3])
                for c in data["channels"]
            )
            guilds[int(guild_id)] = GuildView(
                GuildSummary(
                    summary["id"], summary["name"], summary["memberCount"], summary["iconURL"]
                ),
                data["available"],
                channels,
                {int(entry.data["id"]): entry for entry in channels},
                self._snapshot(bot, int(guild_id), data["members"]),
                data["retryAt"],
            )
        published = PublishedBot(
            fields.get("version", ""),
            BotView(guilds),
            _failure_from(fields.get("failure", "")),
            self._clock(),
        )
        with self._lock:
            self._bots[bot] = published
        return published

    def _snapshot(self, bot: str, guild_id: int, etag: str | None) -> MemberSnapshot | None:
        if etag is None:
            return None
        key = (bot, guild_id)
        cached = self._snapshots.get(key)
        if cached is not None and cached.document.etag == etag:
            return cached
        raw = self._redis.call(
            lambda: self._redis.client.hgetall(self._keys.members(bot, guild_id))
        )
        if not raw or raw.get(b"etag", b"").decode() != etag:
            return cached  # the new one is still being written: serve the last one meanwhile
        compressed = raw[b"gzip"]
        ids, offsets, blocks = array("Q"), array("Q"), array("Q")
        ids.frombytes(raw[b"ids"])
        offsets.frombytes(raw[b"offsets"])
        blocks.frombytes(raw[b"blocks"])
        # Small lists are kept plain too, as the owner keeps them (pages slice them).
        body = gzip.decompress(compressed) if offsets and offsets[-1] <= PLAIN_LIMIT else None
        snapshot = MemberSnapshot(
            int(raw[b"version"]),
            JsonDocument(etag, body=body, gzip=compressed),
            ids,
            offsets,
            blocks,
        )
        with self._lock:
            self._snapshots[key] = snapshot
        return snapshot

    def forget(self, bot: str) -> None:
        """Drop this process's copies of a bot."""
        with self._lock:
            self._bots.pop(bot, None)
            for key in [k for k in self._snapshots if k[0] == bot]:
                del self._snapshots[key]
