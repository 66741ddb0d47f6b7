"""Which process owns a bot's gateway connection: a fenced lease in Redis.

Discord caps a bot's IDENTIFYs per day and allows one full member request
per guild every 30 s, so in the whole cluster one process holds each bot's
gateway connection: the one holding its lease. A lease is
``"<owner>:<fence>"`` with a time to live (``BOT_LEASE_TIME``): taken with
``SET NX`` (the fence is the next value of the bot's counter, so every new
owner has a higher number than the last), renewed by its owner, released by
compare-and-delete. An owner that cannot renew gives the connection up; its
writes of published state carry its fence and are refused once a newer owner
exists (:mod:`membersense.cluster.views`), so a stalled owner never
overwrites a newer one's state.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import NamedTuple

from membersense.cluster.connection import RedisConnection

__all__ = ["LEASE_RELEASED", "Attempt", "Leases"]

#: The notice sent when a lease is given back (so another process takes it at once).
LEASE_RELEASED = "lease-released"

#: KEYS: lease, fence counter. ARGV: owner, ttl ms. Returns {new fence, 0}, or {0, the
#: holder's remaining ms} when held.
_ACQUIRE = """
local remaining = redis.call('PTTL', KEYS[1])
if remaining ~= -2 then return {0, remaining} end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', tonumber(ARGV[2]))
return {fence, 0}
"""

#: KEYS: lease. ARGV: "<owner>:<fence>", ttl ms. 1 if renewed.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 0
"""

#: KEYS: lease. ARGV: "<owner>:<fence>", notices channel, notice. 1 if released.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""


class Attempt(NamedTuple):
    """What trying for a lease found."""

    #: The new owner's fence when this process took the lease; None when another holds it.
    fence: int | None
    #: When another holds it: seconds until that lease runs out unless renewed.
    runs_out_in_s: float


class Leases:
    """This process's side of the bots' leases (see the module docstring).

    *lease_s* is the lease's time to live in seconds.
    """

    def __init__(self, connection: RedisConnection, lease_s: float) -> None:
        self._redis = connection
        self._keys = connection.keys
        self.lease_s = lease_s
        #: This process, as leases name it.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._acquire = connection.script(_ACQUIRE)
        self._renew = connection.script(_RENEW)
        self._release = connection.script(_RELEASE)

    def __repr__(self) -> str:
        return f"<Leases owner={self.owner}>"

    @property
    def _ttl_ms(self) -> int:
        return int(self.lease_s * 1000)

    def token(self, fence: int) -> str:
        """This process's lease value for *fence*."""
        return f"{self.owner}:{fence}"

    def attempt(self, bot: str) -> Attempt:
        """Take the bot's lease if it is free; else how long its holder's lease still runs."""
        fence, remaining_ms = self._redis.call(
            lambda: self._acquire(
                keys=[self._keys.lease(bot), self._keys.fence(bot)], args=[self.owner, self._ttl_ms]
            )
        )
        if fence:
            return Attempt(int(fence), 0.0)
        # A lease always has a time to live; one without (set by hand) counts as just renewed.
        remaining = int(remaining_ms) / 1000 if int(remaining_ms) >= 0 else self.lease_s
        return Attempt(None, remaining)

    def acquire(self, bot: str) -> int | None:
        """Take the bot's lease if it is free; the fence, or None when another holds it."""
        return self.attempt(bot).fence

    def renew(self, bot: str, fence: int) -> bool:
        """Extend a lease this process holds; False if it no longer holds it."""
        return bool(
            self._redis.call(
                lambda: self._renew(
                    keys=[self._keys.lease(bot)], args=[self.token(fence), self._ttl_ms]
                )
            )
        )

    def release(self, bot: str, fence: int) -> bool:
        """Give a lease back (and tell the others); False if it was not ours any more."""
        return bool(
            self._redis.call(
                lambda: self._release(
                    keys=[self._keys.lease(bot)],
                    args=[self.token(fence), self._keys.notices, f"{LEASE_RELEASED} {bot}"],
                )
            )
        )

    def holder(self, bot: str) -> tuple[str, int] | None:
        """Who holds the bot's lease now: (owner, fence), or None."""
        raw = self._redis.call(lambda: self._redis.client.get(self._keys.lease(bot)))
        if not raw:
            return None
        owner, _, fence = (raw.decode() if isinstance(raw, bytes) else str(raw)).rpartition(":")
        return owner, int(fence)
