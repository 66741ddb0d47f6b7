"""What keeps Discord from banning this server: an invalid-request budget and failed tokens.

Discord (Cloudflare, in front of its API) bans an IP address for a while once
it has answered 10 000 of its requests within 10 minutes with 401, 403 or 429
(429s of a *shared* rate limit excepted). The ban hits every bot this server
serves, and anyone can provoke it: each login with a made-up token costs one
401, and per-IP limits do not stop an attacker with many addresses.

- :class:`FailedTokens` remembers, by fingerprint, tokens Discord refused, for
  :data:`FAILED_TOKEN_TTL_S`: logging one in again is answered 401 at once,
  without asking Discord. Bounded (least recently seen go first).
- :class:`InvalidRequestBudget` counts every 401/403/429 Discord answered this
  process (logins, message reads, discord.py's retried 429s: it is fed by the
  aiohttp trace of every client) over a sliding window of
  :data:`INVALID_REQUEST_WINDOW_S`. Once the count reaches
  ``DISCORD_INVALID_REQUEST_LIMIT``, calls that would reach Discord's REST API
  (new logins, message reads) are refused here (:class:`~.errors.HeldBack`), until
  the window has slid past enough of them. Reads served from the gateway's
  cache (members, channels) and logins sharing a live connection go on.

Both are thread-safe: Discord's answers are recorded on the bridge's loop,
checks happen on request threads. The clock is injectable for tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from membersense.discord.errors import HeldBack, InvalidToken
from membersense.discord.tokens import fingerprint

__all__ = [
    "InvalidRequests",
    "RefusedTokens",
    "counts_as_invalid",
    "FAILED_TOKEN_CAPACITY",
    "FAILED_TOKEN_TTL_S",
    "INVALID_REQUEST_WINDOW_S",
    "FailedTokens",
    "InvalidRequestBudget",
]

log = logging.getLogger("membersense.discord")

Clock = Callable[[], float]

#: Discord's window for counting invalid requests, in seconds.
INVALID_REQUEST_WINDOW_S = 600.0
#: How long a refused token is answered without asking Discord again, in seconds.
FAILED_TOKEN_TTL_S = 600.0
#: How many refused tokens are remembered at most (about 1.5 MB when full).
FAILED_TOKEN_CAPACITY = 10_000

#: The statuses Discord counts as invalid requests.
_INVALID_STATUSES = frozenset({401, 403, 429})


class InvalidRequests(Protocol):
    """What the Discord service needs of an invalid-request budget (this process's or shared).

    A *tenant* is a bot (its token's fingerprint): its answers also count against its
    own share of the budget, and a check for it fails once that share is spent.
    """

    total: int

    def record(self, status: int, scope: str | None = None, tenant: str | None = None) -> None:
        """Count one Discord answer if Discord counts it."""
        ...

    def retry_after(self, tenant: str | None = None) -> float:
        """Seconds until Discord may be called again (for *tenant*); 0 while the budget lasts."""
        ...

    def check(self, tenant: str | None = None) -> None:
        """Raise HeldBack instead of a call to Discord while the budget (or *tenant*'s share)
        is spent."""
        ...


#: One bot may spend at most this part of the invalid-request budget: a bot whose token
#: or permissions keep failing is held back long before it could hold back everyone.
TENANT_SHARE = 10
#: How many bots' shares are remembered at most (least recently refused go first).
TENANT_CAPACITY = 10_000
#: What a bot held back by its own share is told.
TENANT_HELD_BACK = "Discord refused too many requests for this bot lately; try again later"


#: A share is never smaller than this (or the whole budget, if that is smaller).
MIN_TENANT_LIMIT = 5


def tenant_limit(limit: int) -> int:
    """The share of a *limit*-answer budget one bot may spend."""
    return max(min(limit, MIN_TENANT_LIMIT), limit // TENANT_SHARE)


class RefusedTokens(Protocol):
    """What the Discord service needs of a memory of refused tokens."""

    def add(self, token: str) -> None:
        """Remember that Discord refused *token*."""
        ...

    def check(self, token: str) -> None:
        """Raise InvalidToken if Discord refused *token* lately."""
        ...


def counts_as_invalid(status: int, scope: str | None) -> bool:
    """Whether Discord counts this answer (*scope*: its X-RateLimit-Scope) as invalid."""
    return status in _INVALID_STATUSES and not (status == 429 and scope == "shared")


class InvalidRequestBudget:
    """A sliding-window count of Discord's 401/403/429 answers, refusing calls at *limit*,
    and a bot's calls at its share (:data:`TENANT_SHARE`)."""

    def __init__(
        self,
        limit: int,
        *,
        window_s: float = INVALID_REQUEST_WINDOW_S,
        clock: Clock = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.tenant_limit = tenant_limit(limit)
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # The times of the latest `limit` invalid answers are all it takes: the budget
        # is spent while the oldest of them is inside the window, and is back when it
        # leaves. Older ones drop off by themselves (maxlen), so memory stays bounded.
        self._times: deque[float] = deque(maxlen=limit)
        self._tenants: OrderedDict[str, deque[float]] = OrderedDict()
        #: Invalid answers recorded since this process started (a counter for diagnostics).
        self.total = 0

    def __repr__(self) -> str:
        return f"<InvalidRequestBudget {self.count()}/{self.limit} per {self.window_s:g}s>"

    def record(self, status: int, scope: str | None = None, tenant: str | None = None) -> None:
        """Count one Discord answer if Discord counts it (*scope*: its X-RateLimit-Scope)."""
        if not counts_as_invalid(status, scope):
            return
        with self._lock:
            now = self._clock()
            was_spent = self._spent_at(now) > 0
            self._times.append(now)
            self.total += 1
            spent_for = self._spent_at(now)
            if tenant is not None:
                times = self._tenants.get(tenant)
                if times is None:
                    times = self._tenants[tenant] = deque(maxlen=self.tenant_limit)
                    while len(self._tenants) > TENANT_CAPACITY:
                        self._tenants.popitem(last=False)
                times.append(now)
                self._tenants.move_to_end(tenant)
        if spent_for and not was_spent:
            log.warning(
                "Discord refused too many requests; holding back calls to its API",
                extra={
                    "fields": {
                        "limit": self.limit,
                        "window_s": self.window_s,
                        "retry_after": round(spent_for, 1),
                    }
                },
            )

    def count(self) -> int:
        """Invalid answers within the window (at most *limit*: older ones are not kept)."""
        with self._lock:
            horizon = self._clock() - self.window_s
            return sum(1 for t in self._times if t > horizon)

    def retry_after(self, tenant: str | None = None) -> float:
        """Seconds until Discord may be called again (for *tenant*); 0 while the budget lasts."""
        with self._lock:
            return max(self._spent_at(self._clock()), self._tenant_spent_at(tenant))

    def check(self, tenant: str | None = None) -> None:
        """Raise :class:`HeldBack` instead of a call to Discord while the budget is spent,
        or *tenant*'s share of it."""
        with self._lock:
            now = self._clock()
            everyone, own = self._spent_at(now), self._tenant_spent_at(tenant)
        if everyone > 0 or own > 0:
            raise HeldBack(
                None if everyone >= own else TENANT_HELD_BACK, retry_after=max(everyone, own)
            )

    def _tenant_spent_at(self, tenant: str | None) -> float:
        # Under the lock.
        times = self._tenants.get(tenant) if tenant is not None else None
        if times is None or len(times) < self.tenant_limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - self._clock())

    def _spent_at(self, now: float) -> float:
        # Under the lock.
        if len(self._times) < self.limit:
            return 0.0
        return max(0.0, self._times[0] + self.window_s - now)


class FailedTokens:
    """Fingerprints of tokens Discord refused, answered 401 locally for *ttl_s*."""

    def __init__(
        self,
        *,
        capacity: int = FAILED_TOKEN_CAPACITY,
        ttl_s: float = FAILED_TOKEN_TTL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: OrderedDict[str, float] = OrderedDict()  # least recently seen first

    def __repr__(self) -> str:
        return f"<FailedTokens {len(self)}/{self.capacity}>"

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def add(self, token: str) -> None:
        """Remember that Discord refused *token*."""
        key = fingerprint(token)
        with self._lock:
            self._expiry[key] = self._clock() + self.ttl_s
            self._expiry.move_to_end(key)
            while len(self._expiry) > self.capacity:
                self._expiry.popitem(last=False)

    def check(self, token: str) -> None:
        """Raise :class:`InvalidToken` if Discord refused *token* lately."""
        key = fingerprint(token)
        with self._lock:
            expiry = self._expiry.get(key)
            if expiry is None:
                return
            if expiry <= self._clock():
                del self._expiry[key]
                return
            self._expiry.move_to_end(key)
        raise InvalidToken()
