"""Per-client-IP sliding-window rate limiting.

The original design kept a hand-written list of timestamps per IP. Here the
same sliding window is the *moving window* of the `limits` library (the engine
under Flask-Limiter): the same algorithm, already tested, with pluggable
storage, so ``RATE_LIMIT_STORAGE_URI=redis://`` shares one budget between
several MemberSense processes.

We use `limits` directly rather than through Flask-Limiter: we need one
application-wide budget, not per-route decorators, and Flask-Limiter's
per-request limit resolution cost about half of a cached ``/api/members``
request (see BENCHMARKS.md).

One budget covers every route (as the original counted every request against
one budget per IP), except those exempted here (the health check, the
dashboard's static files) and CORS preflights. The client IP is the socket
peer; werkzeug's ``ProxyFix`` (see the app factory) replaces it with the
``X-Forwarded-For`` entry of the configured number of trusted proxies, so a
client cannot pick its own address.

Each request needs its verdict and the window's state (for the ``RateLimit-*``
headers): two storage calls through `limits`' API. On Redis
:class:`RedisMovingWindow` does both in one script over the same keys and
values as `limits`' moving window. Even one round trip per request was most of
a cached ``/api/members`` request in Redis mode, so there a process takes a
busy client's places in blocks (:class:`ReservedMovingWindow`), still counting
every request in the one shared window before admitting it (see BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from flask import Blueprint, Flask, Response, current_app, g, request
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from membersense import metrics
from membersense.errors import TooManyRequests

if TYPE_CHECKING:
    # Not at run time: memory mode never imports redis-py (Debian's uWSGI Python cannot).
    from redis import Redis

    from membersense.runtime import Runtime

__all__ = [
    "PrunedMemoryStorage",
    "RateLimiting",
    "RedisMovingWindow",
    "Reservation",
    "ReservedMovingWindow",
]

log = logging.getLogger("membersense.ratelimit")

#: How long to serve from the in-memory fallback before trying the shared storage again.
RETRY_SHARED_STORAGE_S = 30.0


#: How often the in-memory storage drops what left every window, in seconds.
SWEEP_INTERVAL_S = 1.0


class PrunedMemoryStorage(MemoryStorage):
    """``limits``' in-memory storage, swept once a second, forgetting clients whose window
    emptied.

    limits 5.x sweeps expired entries on a timer thread of 10 ms that every hit
    restarts once it has run: under steady traffic, a new thread every 10 ms,
    which cost more than the rest of the rate limit. Expired entries need no
    hurry (every check compares times; a sweep only frees memory), so here a
    sweep runs at most once a second. Its sweep also leaves an empty list
    behind per address ever seen, so memory would grow with every new client
    IP; this drops those keys too.
    """

    # Its own scheme name: the base class's metaclass registers subclasses by
    # scheme, and inheriting "memory" would replace limits' own storage globally.
    STORAGE_SCHEME = ["membersense-memory"]

    def _MemoryStorage__schedule_expiry(self) -> None:  # called by every hit (name-mangled)
        if not self.timer.is_alive():
            self.timer = threading.Timer(SWEEP_INTERVAL_S, self._MemoryStorage__expire_events)
            self.timer.daemon = True  # never holds the interpreter's exit
            self.timer.start()

    def _MemoryStorage__expire_events(self) -> None:  # the timer's (name-mangled) callback
        # A private (name-mangled) method: mypy cannot see it through super().
        super()._MemoryStorage__expire_events()  # type: ignore[misc]
        for key in [k for k, events in list(self.events.items()) if not events]:
            with self.locks[key]:
                if not self.events.get(key):
                    self.events.pop(key, None)
                    self.locks.pop(key, None)


#: `limits`' moving window, taking up to ARGV[4] places at once, then the window's state.
#: KEYS: the window (a list of timestamps, newest first). ARGV: now, limit, expiry (s),
#: wanted places, their timestamp, then a timestamp and a count of places to give back first.
#: A place's timestamp never falls below the newest one's, so the list stays ordered.
#: Returns {places taken, oldest timestamp in the window, entries in the window, timestamp}.
_RESERVE = """
local now, limit, expiry = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wanted, stamp = tonumber(ARGV[4]), ARGV[5]
if tonumber(ARGV[7]) > 0 then
    redis.call('LREM', KEYS[1], ARGV[7], ARGV[6])
end
local since = now - expiry
local low, high, oldest, count = 0, redis.call('LLEN', KEYS[1]) - 1, nil, 0
while low <= high do
    local mid = math.floor((low + high) / 2)
    local entry = redis.call('LINDEX', KEYS[1], mid)
    if tonumber(entry) >= since then
        oldest, count, low = entry, mid + 1, mid + 1
    else
        high = mid - 1
    end
end
local free, taken = limit - count, 0
if free > 0 then
    -- Near the limit, half of what is left: the other processes still find places.
    taken = math.min(wanted, math.ceil(free / 2))
    local newest = redis.call('LINDEX', KEYS[1], 0)
    if newest and tonumber(newest) > tonumber(stamp) then
        stamp = newest
    end
    local places = {}
    for i = 1, taken do
        places[i] = stamp
    end
    redis.call('LPUSH', KEYS[1], unpack(places))
    redis.call('LTRIM', KEYS[1], 0, limit - 1)
    redis.call('EXPIRE', KEYS[1], math.ceil(math.max(0, tonumber(stamp) - now) + expiry))
    count = count + taken
    oldest = oldest or stamp
end
return {taken, oldest or ARGV[1], count, stamp}
"""


@dataclass(frozen=True, slots=True)
class Reservation:
    """Places taken in a window at once: *taken* (0 when the window is full), each carrying
    *stamp*; then *reset* (when the window's oldest entry leaves) and *remaining* places."""

    taken: int
    stamp: str
    reset: float
    remaining: int


class RedisMovingWindow:
    """`limits`' moving window on its Redis storage: places taken and the window read in one
    round trip.

    Same keys and values as :class:`limits.strategies.MovingWindowRateLimiter` on
    that storage, so either reads what the other wrote.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        # limits types its connection as a protocol without pipelines; it is redis-py's client.
        self._redis = cast("Redis", storage.get_connection())
        self._script = self._redis.register_script(_RESERVE.encode())

    def key(self, item: RateLimitItem, identifier: str) -> str:
        """The Redis key of *identifier*'s window."""
        return str(self.storage.prefixed_key(item.key_for(identifier)))

    def reserve(
        self,
        item: RateLimitItem,
        key: str,
        *,
        wanted: int,
        stamp: float,
        give_back: tuple[str, int] = ("", 0),
    ) -> Reservation:
        """Take up to *wanted* places in the window at *key*, timestamped *stamp* (or the
        newest entry's time, if later); first give back *give_back*'s places (stamp, count)."""
        expiry, now = item.get_expiry(), time.time()
        args: list[str | float] = [now, item.amount, expiry, wanted, repr(stamp), *give_back]
        try:
            taken, oldest, count, stamp_used = self._script(keys=[key], args=args)
        except self.storage.base_exceptions as exc:  # as limits' wrap_exceptions would
            raise StorageError(exc) from exc
        return Reservation(
            int(taken), stamp_used.decode(), float(oldest) + expiry, item.amount - int(count)
        )

    def give_back(self, places: list[tuple[str, str, int]]) -> None:
        """Free places taken but not used: (key, stamp, count) each, in one round trip."""
        pipeline = self._redis.pipeline(transaction=False)
        for key, stamp, count in places:
            pipeline.lrem(key, count, stamp)
        try:
            pipeline.execute()
        except self.storage.base_exceptions as exc:
            raise StorageError(exc) from exc


#: Most places a process takes for one client at once.
MAX_SHARE = 64


@dataclass(slots=True)
class _Block:
    """Places taken in one reservation, used by requests without a lock.

    *places* holds, for each place left, what ``RateLimit-Remaining`` adds to
    *remaining* when a request takes it; ``deque.pop`` is atomic, so two
    requests never take the same place, and :meth:`drain` leaves none for later.
    """

    stamp: str
    usable_until: float
    remaining: int  # the window's free places after the reservation
    reset: float
    places: deque[int]

    def drain(self) -> int:
        """Take every place left; how many there were."""
        count = 0
        while True:
            try:
                self.places.pop()
            except IndexError:
                return count
            count += 1


@dataclass(slots=True)
class _Share:
    """One client's places held by this process (see :class:`ReservedMovingWindow`)."""

    key: str
    lock: threading.Lock = field(default_factory=threading.Lock)  # one reservation at a time
    wanted: int = 1
    block: _Block | None = None
    refused_until: float = 0.0
    reset: float = 0.0  # of the last refusal
    dropped: bool = False


class ReservedMovingWindow:
    """A shared Redis window that a busy client's requests reach about once per block.

    One Redis round trip per request was most of a cached ``/api/members``
    request in Redis mode (see BENCHMARKS.md). Here a process takes places for a
    client in blocks: the first request of a client takes one place, as before;
    a client that comes back while its block is still fresh gets twice as many
    next time, up to :data:`MAX_SHARE` (and a sixteenth of the limit); later
    requests take the block's places without a round trip, and without a lock
    (under gunicorn's threads, one lock per client was a queue). Near the limit
    a block is at most half of what is left, so there every request is counted
    in Redis as it comes.

    The one budget stays exact: a place is taken in Redis before the request it
    admits, and carries the time its block stops being usable (at most
    *lifetime* after it was taken), so it stays in the window for at least a
    window after the request it admitted. What it costs a client: places taken
    but not used count until given back, within a *lifetime* (a sweeper gives
    back those of blocks that went stale), and ``RateLimit-Remaining`` is as of
    the block's reservation, less what this process used since. A refused
    client is answered from memory until its window's oldest entry leaves (at
    most *lifetime*), so a flood of refused requests does not reach Redis.
    """

    def __init__(self, window: RedisMovingWindow, *, lifetime: float) -> None:
        self.window = window
        self.storage = window.storage
        self.lifetime = lifetime
        self._shares: dict[str, _Share] = {}
        self._lock = threading.Lock()
        self._sweeper: threading.Timer | None = None

    def hit(self, item: RateLimitItem, identifier: str) -> tuple[bool, float, int]:
        """Count one request: (allowed, window reset time, remaining)."""
        while True:
            share = self._shares.get(identifier)
            if share is None:
                with self._lock:
                    share = self._shares.setdefault(
                        identifier, _Share(self.window.key(item, identifier))
                    )
                self._schedule_sweep()
            answer = self._from_memory(share, time.time())
            if answer is not None:
                return answer
            with share.lock:
                if not share.dropped:  # else the sweeper forgot it meanwhile: look again
                    return self._reserve(item, share)

    def _from_memory(self, share: _Share, now: float) -> tuple[bool, float, int] | None:
        if now < share.refused_until:
            return False, share.reset, 0
        block = share.block
        if block is not None and now < block.usable_until:
            try:
                left = block.places.pop()
            except IndexError:
                return None
            return True, block.reset, block.remaining + left
        return None

    def _reserve(self, item: RateLimitItem, share: _Share) -> tuple[bool, float, int]:
        now = time.time()
        answer = self._from_memory(share, now)  # another request may have reserved meanwhile
        if answer is not None:
            return answer
        give_back = ("", 0)
        block, share.block = share.block, None
        if block is not None:
            left = block.drain()
            if left:  # it went stale before its places were used: smaller blocks
                share.wanted = max(1, share.wanted // 2)
                give_back = (block.stamp, left)
            elif now < block.usable_until:  # all used while fresh: larger ones
                share.wanted = min(max(1, min(MAX_SHARE, item.amount // 16)), share.wanted * 2)
        # A single place is used at once; a block's serve until it goes stale.
        stamp = now + self.lifetime if share.wanted > 1 else now
        taken = self.window.reserve(
            item, share.key, wanted=share.wanted, stamp=stamp, give_back=give_back
        )
        if not taken.taken:
            share.refused_until, share.reset = min(taken.reset, now + self.lifetime), taken.reset
            return False, taken.reset, 0
        left = taken.taken - 1
        share.block = _Block(
            taken.stamp, now + self.lifetime, taken.remaining, taken.reset, deque(range(left))
        )
        return True, taken.reset, taken.remaining + left

    def sweep(self, *, everything: bool = False) -> None:
        """Give back the places of stale blocks (of every block: *everything*), and forget
        clients with nothing held."""
        now = time.time()
        places: list[tuple[str, str, int]] = []
        with self._lock:
            for identifier, share in list(self._shares.items()):
                block = share.block
                live = block is not None and now < block.usable_until
                if not everything and (live or now < share.refused_until):
                    continue
                if not share.lock.acquire(blocking=False):
                    continue  # a request is reserving: next sweep
                try:
                    block = share.block
                    left = block.drain() if block is not None else 0
                    if block is not None and left:
                        places.append((share.key, block.stamp, left))
                    share.dropped = True
                    del self._shares[identifier]
                finally:
                    share.lock.release()
        if places:
            try:
                self.window.give_back(places)
            except StorageError:
                # Nothing lost: the places leave the window by themselves within a window.
                log.debug("could not give back %d unused rate-limit places", len(places))

    def close(self) -> None:
        """Stop the sweeper and give back every place held."""
        with self._lock:
            sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
        self.sweep(everything=True)

    def _schedule_sweep(self) -> None:
        # Started by the first request of a client (in the serving process), and again
        # by each sweep while clients are held; a daemon, never holding the exit.
        with self._lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return
            self._sweeper = threading.Timer(max(self.lifetime, 0.05), self._sweep_on_timer)
            self._sweeper.daemon = True
            self._sweeper.start()

    def _sweep_on_timer(self) -> None:
        self.sweep()
        with self._lock:
            self._sweeper = None
            if not self._shares:
                return
        self._schedule_sweep()


class _LimitsMovingWindow:
    """`limits`' moving window through its API (any storage): two calls per hit."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    def hit(self, item: RateLimitItem, identifier: str) -> tuple[bool, float, int]:
        """Count one request: (allowed, window reset time, remaining)."""
        allowed = self._limiter.hit(item, identifier)
        reset, remaining = self._limiter.get_window_stats(item, identifier)
        return allowed, reset, remaining


_Window = ReservedMovingWindow | _LimitsMovingWindow


def _make_window(storage: Storage, window_s: float) -> _Window:
    # Sentinel and Cluster storages subclass RedisStorage but route scripts differently.
    if type(storage) is RedisStorage:
        return ReservedMovingWindow(RedisMovingWindow(storage), lifetime=block_lifetime(window_s))
    return _LimitsMovingWindow(storage)


def block_lifetime(window_s: float) -> float:
    """How long a process may use places it took for a client: a twentieth of the window,
    at most a second, so a block's places leave the window at most that late."""
    return min(1.0, window_s / 20)


def _make_storage(uri: str, key_prefix: str) -> Storage:
    if uri.startswith("memory://"):
        return PrunedMemoryStorage()
    # Every other scheme config allows is Redis's. wrap_exceptions: any backend failure
    # surfaces as limits' StorageError. It is typed as returning sync or async storages;
    # config refuses async schemes.
    return storage_from_string(  # type: ignore[return-value]
        uri, key_prefix=f"{key_prefix}ratelimit", wrap_exceptions=True
    )


class _Budget:
    """One app's limit on its shared storage, with an in-memory fallback for outages."""

    def __init__(self, item: RateLimitItem, storage_uri: str, key_prefix: str) -> None:
        self.item = item
        #: The RateLimit-Policy and RateLimit-Limit header values.
        self.policy = f"{item.amount};w={item.get_expiry()}"
        self.limit = str(item.amount)
        self._storage_uri = storage_uri
        self._key_prefix = key_prefix
        self._shared: _Window | None = None
        self._fallback: _Window | None = None
        self._next_probe = 0.0
        self._lock = threading.Lock()

    @property
    def storage(self) -> Storage:
        """Where windows are counted while the storage is healthy."""
        return self._shared_limiter().storage

    def _shared_limiter(self) -> _Window:
        # Built on first use: the in-memory storage starts a timer thread, and
        # nothing may start before the app serves (in gunicorn's worker).
        shared = self._shared
        if shared is None:
            with self._lock:
                if self._shared is None:
                    self._shared = _make_window(
                        _make_storage(self._storage_uri, self._key_prefix),
                        self.item.get_expiry(),
                    )
                shared = self._shared
        return shared

    def _limiter(self) -> _Window:
        fallback = self._fallback
        if fallback is None:
            return self._shared_limiter()
        now = time.monotonic()
        with self._lock:  # one probe of the shared storage per period, not per request
            due = now >= self._next_probe
            if due:
                self._next_probe = now + RETRY_SHARED_STORAGE_S
        if due and self._shared_limiter().storage.check():
            log.warning("rate limit storage is reachable again; leaving the in-memory fallback")
            self._fallback = None
            return self._shared_limiter()
        return fallback

    def close(self) -> None:
        """Give back the places held for clients (a stopping process serves no more)."""
        shared = self._shared
        if isinstance(shared, ReservedMovingWindow):
            shared.close()

    def hit(self, key: str) -> tuple[bool, float, int]:
        """Count a request for *key*: (allowed, window reset time, remaining)."""
        limiter = self._limiter()
        try:
            allowed, reset, remaining = limiter.hit(self.item, key)
        except StorageError:
            if limiter is self._fallback:  # memory never fails; this is something else
                raise
            # A storage outage (Redis down) must not take the API down with it.
            with self._lock:
                if self._fallback is None:
                    log.warning("rate limit storage unreachable; counting in memory meanwhile")
                    self._fallback = _LimitsMovingWindow(PrunedMemoryStorage())
                    self._next_probe = time.monotonic() + RETRY_SHARED_STORAGE_S
            return self.hit(key)
        return allowed, reset, remaining


def _seconds_until(timestamp: float) -> int:
    return max(0, math.ceil(timestamp - time.time()))


class RateLimiting:
    """The Flask extension holding each app's request budget."""

    key = "membersense.ratelimit"

    def __init__(self) -> None:
        self._exempt_blueprints: set[str] = set()

    def exempt(self, blueprint: Blueprint) -> Blueprint:
        """Never count requests to *blueprint*."""
        self._exempt_blueprints.add(blueprint.name)
        return blueprint

    def init_app(self, app: Flask, runtime: Runtime) -> None:
        """Give *app* its budget from *runtime*'s settings and check it before every request;
        the runtime's close gives back the places the budget holds."""
        settings = runtime.settings
        window_s = settings.rate_limit_window // 1000
        budget = _Budget(
            RateLimitItemPerSecond(settings.rate_limit_max_requests, window_s),
            settings.rate_limit_storage,
            settings.redis_key_prefix,
        )
        app.extensions[self.key] = budget
        runtime.on_close(budget.close)
        app.before_request(self._check)
        app.after_request(self._add_headers)

    def _check(self) -> None:
        # A browser preflight is not a request for data; counting it would
        # halve the budget of every front end that sends Authorization.
        # Once, not per use. The proxy's typing hides this werkzeug LocalProxy method.
        req = request._get_current_object()  # type: ignore[attr-defined]
        if req.method == "OPTIONS" or req.blueprint in self._exempt_blueprints:
            return
        budget: _Budget = current_app.extensions[self.key]
        allowed, reset, remaining = budget.hit(req.remote_addr or "unknown")
        g.rate_limit = (budget, reset, remaining)
        if not allowed:
            metrics.rate_limited()
            raise TooManyRequests(retry_after=reset - time.time())

    @staticmethod
    def _add_headers(response: Response) -> Response:
        state = g.get("rate_limit")
        if state is not None:
            budget, reset, remaining = state
            # add(), not set(): nothing else writes these, so skip set()'s scan.
            add = response.headers.add
            add("RateLimit-Policy", budget.policy)
            add("RateLimit-Limit", budget.limit)
            add("RateLimit-Remaining", str(max(0, remaining)))
            add("RateLimit-Reset", str(_seconds_until(reset)))
        return response
