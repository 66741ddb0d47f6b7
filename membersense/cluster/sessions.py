"""The session store of Redis mode: every process sees every session.

Each session is a hash with a TTL (``SESSION_TIMEOUT``, or the login's bound
while it is pending): an idle session expires in Redis by itself, with no
sweeper, and frees its slot. Three sorted sets of session ids scored by
expiry — all sessions, one bot's, one client address's — carry the caps:
opening a session prunes them and checks all three caps in one Lua script,
so concurrent logins on any number of instances never pass
``MAX_CONCURRENT_USERS`` (or the per-token and per-address caps).

Using a session restarts its timer, but not on every request: each process
keeps the records it has seen and refreshes a session in Redis (one script:
its TTL and its scores) only when :attr:`RedisSessionStore.touch_interval`
has passed since it last did. A logout anywhere deletes the hash and sends a
notice on which every process drops its copy, so the session ends everywhere
within milliseconds; while notices may be missed, no copy is trusted.

The token is kept sealed (:mod:`membersense.cluster.sealing`); a session whose
token was sealed under another ``SESSION_SECRET`` is ended when found.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from membersense.cluster.connection import RedisConnection
from membersense.cluster.notices import Notices
from membersense.cluster.sealing import TokenSealer
from membersense.sessions.store import (
    ENDED_ELSEWHERE,
    Caps,
    EndListener,
    Refusal,
    SessionRecord,
    SessionStore,
)

__all__ = ["RedisSessionStore", "SESSION_ENDED"]

#: The notice sent when a session ends.
SESSION_ENDED = "session-ended"
#: How long the store's first use waits for the notices listener (a subscribe: a round trip).
FIRST_LISTEN_WAIT_S = 1.0

# Sessions' expiry scores use Redis's clock (TIME), so instances' clocks need not agree.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Extend a sorted set's own TTL so it outlives the sessions it lists.
_KEEP = """
local function keep(key, ttl)
  local left = redis.call('PTTL', key)
  if left < ttl then redis.call('PEXPIRE', key, ttl) end
end
"""

#: KEYS: all, bot, client ('' when none), session. ARGV: ttl, total, per token, per client,
#: id, then the session's field/value pairs.
_OPEN = (
    _NOW
    + _KEEP
    + """
local ttl = tonumber(ARGV[1])
for i = 1, 3 do
  if KEYS[i] ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now) end
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 'full' end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 'token' end
if KEYS[3] ~= '' and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then return 'client' end
redis.call('HSET', KEYS[4], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[4], ttl)
for i = 1, 3 do
  if KEYS[i] ~= '' then
    redis.call('ZADD', KEYS[i], now + ttl, ARGV[5])
    keep(KEYS[i], ttl)
  end
end
return 'ok'
"""
)

#: KEYS: session, all. ARGV: ttl, id, then field/value pairs to set first (may be none).
#: Refreshes a logged-in session's TTL and scores; returns its fields (nil: gone).
_TOUCH = (
    _NOW
    + _KEEP
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
if redis.call('HGET', KEYS[1], 'pending') ~= '1' then
  local ttl = tonumber(ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  for _, key in ipairs({KEYS[2], redis.call('HGET', KEYS[1], 'bkey'),
                        redis.call('HGET', KEYS[1], 'ckey')}) do
    if key and key ~= '' then
      redis.call('ZADD', key, 'XX', now + ttl, ARGV[2])
      keep(key, ttl)
    end
  end
end
return redis.call('HGETALL', KEYS[1])
"""
)

#: KEYS: session, all. ARGV: id, notices channel. Returns the fields it had (nil: gone).
_CLOSE = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return nil end
for _, key in ipairs({KEYS[2], redis.call('HGET', KEYS[1], 'bkey'),
                      redis.call('HGET', KEYS[1], 'ckey')}) do
  if key and key ~= '' then redis.call('ZREM', key, ARGV[1]) end
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], 'session-ended ' .. ARGV[1])
return fields
"""

#: KEYS: one sorted set. Returns how many of its sessions are live.
_COUNT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)


@dataclass(frozen=True, slots=True)
class _Cached:
    record: SessionRecord
    refreshed: float  # when this process last refreshed it in Redis (monotonic)


class RedisSessionStore(SessionStore):
    """Sessions in Redis (see the module docstring).

    *idle_timeout* and *pending_timeout* are seconds; *clock* is monotonic
    seconds (when to refresh a session again).
    """

    def __init__(
        self,
        connection: RedisConnection,
        notices: Notices,
        sealer: TokenSealer,
        *,
        idle_timeout: float,
        pending_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = connection
        self._keys = connection.keys
        self._notices = notices
        self._sealer = sealer
        self.idle_timeout = idle_timeout
        self.pending_timeout = pending_timeout
        #: A session is refreshed in Redis at most this often by one process.
        self.touch_interval = min(60.0, idle_timeout / 10)
        self._clock = clock
        self._on_end: EndListener | None = None
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._refusing = False
        self._waited_for_notices = False
        self._open = connection.script(_OPEN)
        self._touch = connection.script(_TOUCH)
        self._close = connection.script(_CLOSE)
        self._count = connection.script(_COUNT)
        notices.on(SESSION_ENDED, self._ended_elsewhere)
        notices.on_gap(self._forget_all)

    def __repr__(self) -> str:
        return f"<RedisSessionStore cached={len(self._cache)}>"

    def set_end_listener(self, on_end: EndListener | None) -> None:
        """Report every session this process removes to *on_end(record, reason)*."""
        self._on_end = on_end

    # -- the local copies ---------------------------------------------------------

    def _forget(self, session_id: str) -> _Cached | None:
        with self._lock:
            return self._cache.pop(session_id, None)

    def _ended_elsewhere(self, session_id: str) -> None:
        # A notice: another process ended the session. Streams and webhooks of it here end
        # too (if this process knew it: else it has none).
        cached = self._forget(session_id)
        if cached is not None:
            self._ended([cached.record], ENDED_ELSEWHERE)

    def _forget_all(self) -> None:
        with self._lock:
            self._cache.clear()

    def _listen(self) -> None:
        # The first time, wait (briefly) for the listener: a copy is kept only while notices
        # reach this process, and the sessions a new worker serves first need one too, or an
        # event stream opened by its first request would not end when its session ends
        # elsewhere (only at its next heartbeat).
        if self._waited_for_notices:
            self._notices.start()
            return
        self._waited_for_notices = True
        self._notices.wait_listening(FIRST_LISTEN_WAIT_S)

    def _remember(self, record: SessionRecord) -> None:
        if self._notices.listening:  # a copy is only as good as the notices that end it
            with self._lock:
                self._cache[record.id] = _Cached(record, self._clock())

    # -- records <-> hashes -------------------------------------------------------------

    def _fields(self, record: SessionRecord) -> list[str]:
        fields = {
            "fp": record.fingerprint,
            "guilds": json.dumps(list(record.guild_ids)),
            "created": repr(record.created_at),
            "pending": "1" if record.pending else "0",
            "bkey": self._keys.bot_sessions(record.fingerprint),
            "ckey": self._keys.client_sessions(record.client) if record.client else "",
            "client": record.client or "",
            "sealed": record.sealed_token or "",
        }
        return [item for pair in fields.items() for item in pair]

    def _record(self, session_id: str, raw: Any) -> SessionRecord | None:
        if not raw:
            return None
        values = {k.decode(): v.decode() for k, v in zip(raw[::2], raw[1::2], strict=True)}
        return SessionRecord(
            id=session_id,
            fingerprint=values["fp"],
            guild_ids=tuple(json.loads(values.get("guilds") or "[]")),
            created_at=float(values.get("created") or 0),
            last_activity=self._clock(),
            client=values.get("client") or None,
            pending=values.get("pending") == "1",
            sealed_token=values.get("sealed") or None,
        )

    def _ended(self, records: list[SessionRecord], reason: str) -> None:
        listener = self._on_end
        if listener is not None:
            for record in records:
                listener(record, reason)

    # -- the interface ------------------------------------------------------------------

    def open(self, record: SessionRecord, caps: Caps) -> Refusal | None:
        """Add *record* (pending) unless a cap would be passed, atomically across processes."""
        self._listen()
        if self._refusing:
            return Refusal.CLOSED
        pending = replace(record, pending=True)
        keys = [
            self._keys.sessions,
            self._keys.bot_sessions(record.fingerprint),
            self._keys.client_sessions(record.client) if record.client else "",
            self._keys.session(record.id),
        ]
        args = [
            int(self.pending_timeout * 1000),
            caps.total,
            caps.per_token,
            caps.per_client,
            record.id,
            *self._fields(pending),
        ]
        outcome = self._redis.call(lambda: self._open(keys=keys, args=args))
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        return None if outcome == "ok" else Refusal(outcome)

    def activate(self, session_id: str, guild_ids: tuple[str, ...]) -> SessionRecord | None:
        """Mark a pending session logged in; None if it is gone meanwhile."""
        if self._refusing:
            return None
        raw = self._redis.call(
            lambda: self._touch(
                keys=[self._keys.session(session_id), self._keys.sessions],
                args=[
                    int(self.idle_timeout * 1000),
                    session_id,
                    "guilds",
                    json.dumps(list(guild_ids)),
                    "pending",
                    "0",
                ],
            )
        )
        record = self._record(session_id, raw)
        if record is not None:
            self._remember(record)
        return record

    def get(self, session_id: str) -> SessionRecord | None:
        """The live, logged-in session; refreshed in Redis at most every touch_interval."""
        cached = self._cache.get(session_id)
        now = self._clock()
        if cached is not None and now - cached.refreshed < self.touch_interval:
            return cached.record
        self._listen()
        raw = self._redis.call(
            lambda: self._touch(
                keys=[self._keys.session(session_id), self._keys.sessions],
                args=[int(self.idle_timeout * 1000), session_id],
            )
        )
        record = self._record(session_id, raw)
        if record is None:
            self._forget(session_id)
            if cached is not None:
                self._ended([cached.record], "expired")
            return None
        if record.pending:
            return None
        if not self._sealer.current(record.sealed_token):  # SESSION_SECRET changed
            self.close(session_id, reason="secret changed")
            return None
        self._remember(record)
        return record

    def close(self, session_id: str, reason: str = "logout") -> SessionRecord | None:
        """Remove a session everywhere; the removed record, or None."""
        self._forget(session_id)  # first: this process's own notice then finds nothing
        raw = self._redis.call(
            lambda: self._close(
                keys=[self._keys.session(session_id), self._keys.sessions],
                args=[session_id, self._keys.notices],
            )
        )
        record = self._record(session_id, raw)
        if record is not None:
            self._ended([record], reason)
        return record

    def close_for(self, fingerprint: str, reason: str) -> list[SessionRecord]:
        """Remove every logged-in session of one bot, everywhere."""
        closed = []
        for session_id in self._ids_of(fingerprint):
            if self._pending(session_id):
                continue  # a login still deciding
            record = self.close(session_id, reason)
            if record is not None:
                closed.append(record)
        return closed

    def _ids_of(self, fingerprint: str) -> list[str]:
        def read() -> Any:
            return self._redis.client.zrange(self._keys.bot_sessions(fingerprint), 0, -1)

        return [raw.decode() for raw in self._redis.call(read)]

    def _pending(self, session_id: str) -> bool:
        def read() -> Any:
            return self._redis.client.hget(self._keys.session(session_id), "pending")

        return bool(self._redis.call(read) == b"1")

    def expire(self) -> list[SessionRecord]:
        """Forget this process's copies of sessions Redis expired; none to return.

        Redis expires idle sessions itself (and the caps prune them), unseen: a copy
        not refreshed here for the idle timeout may be of one that is gone. Those are
        dropped, and the end listener told (``ENDED_ELSEWHERE``: nothing to log again),
        so this process's streams and webhooks of them end too.
        """
        now = self._clock()
        with self._lock:
            stale = [
                c.record for c in self._cache.values() if now - c.refreshed >= self.idle_timeout
            ]
        if not stale:
            return []

        def exists() -> list[Any]:
            pipeline = self._redis.client.pipeline(transaction=False)
            for record in stale:
                pipeline.exists(self._keys.session(record.id))
            return list(pipeline.execute())

        gone = [r for r, found in zip(stale, self._redis.call(exists), strict=True) if not found]
        self._ended([r for r in gone if self._forget(r.id) is not None], ENDED_ELSEWHERE)
        return []

    def shutdown(self) -> list[SessionRecord]:
        """This process stops taking logins; the sessions stay, for the other processes."""
        self._refusing = True
        self._forget_all()
        return []

    def refuse_new(self) -> None:
        """Refuse new sessions in this process from now on."""
        self._refusing = True

    def count(self) -> int:
        """Live sessions in the whole cluster (pending ones included)."""
        return int(self._redis.call(lambda: self._count(keys=[self._keys.sessions])))

    def count_for(self, fingerprint: str) -> int:
        """Live sessions of one bot in the whole cluster (pending ones included)."""
        return int(
            self._redis.call(lambda: self._count(keys=[self._keys.bot_sessions(fingerprint)]))
        )

    def fingerprints(self) -> set[str]:
        """The bots of the sessions this process has seen lately."""
        with self._lock:
            return {cached.record.fingerprint for cached in self._cache.values()}
