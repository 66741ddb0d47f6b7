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
headers): two storage calls through `limits`' API. On Redis that was two round
trips, most of a cached ``/api/members`` request in Redis mode; there
:class:`RedisMovingWindow` does both in one script over the same keys and
values as `limits`' moving window (see BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from membersense import metrics
from membersense.config import Settings
from membersense.errors import TooManyRequests

__all__ = ["PrunedMemoryStorage", "RateLimiting", "RedisMovingWindow"]

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


#: `limits`' moving-window acquisition, then the window's oldest entry and size, in one call.
#: KEYS: the window (a list of timestamps, newest first). ARGV: now, limit, expiry (s).
#: Returns {acquired (0/1), oldest timestamp in the window, entries in the window}.
_HIT_AND_COUNT = """
local now, limit, expiry = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local since = now - expiry
local acquired = 0
local last = redis.call('LINDEX', KEYS[1], limit - 1)
if not (last and tonumber(last) >= since) then
    redis.call('LPUSH', KEYS[1], ARGV[1])
    redis.call('LTRIM', KEYS[1], 0, limit - 1)
    redis.call('EXPIRE', KEYS[1], expiry)
    acquired = 1
end
local low, high, oldest, count = 0, redis.call('LLEN', KEYS[1]) - 1, ARGV[1], 0
while low <= high do
    local mid = math.floor((low + high) / 2)
    local entry = redis.call('LINDEX', KEYS[1], mid)
    if tonumber(entry) >= since then
        oldest, count, low = entry, mid + 1, mid + 1
    else
        high = mid - 1
    end
end
return {acquired, oldest, count}
"""


class RedisMovingWindow:
    """`limits`' moving window on its Redis storage, a hit and its window in one round trip.

    Same keys and values as :class:`limits.strategies.MovingWindowRateLimiter` on
    that storage, so either reads what the other wrote.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        self._script = storage.get_connection().register_script(_HIT_AND_COUNT.encode())

    def hit(self, item: RateLimitItem, identifier: str) -> tuple[bool, float, int]:
        """Count one request: (allowed, window reset time, remaining)."""
        key = self.storage.prefixed_key(item.key_for(identifier))
        expiry, now = item.get_expiry(), time.time()
        try:
            acquired, oldest, count = self._script(keys=[key], args=[now, item.amount, expiry])
        except self.storage.base_exceptions as exc:  # as limits' wrap_exceptions would
            raise StorageError(exc) from exc
        return bool(acquired), float(oldest) + expiry, item.amount - int(count)


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


_Window = RedisMovingWindow | _LimitsMovingWindow


def _make_window(storage: Storage) -> _Window:
    # Sentinel and Cluster storages subclass RedisStorage but route scripts differently.
    if type(storage) is RedisStorage:
        return RedisMovingWindow(storage)
    return _LimitsMovingWindow(storage)


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
                    self._shared = _make_window(_make_storage(self._storage_uri, self._key_prefix))
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

    def init_app(self, app: Flask, settings: Settings) -> None:
        """Give *app* its budget from *settings* and check it before every request."""
        window_s = settings.rate_limit_window // 1000
        app.extensions[self.key] = _Budget(
            RateLimitItemPerSecond(settings.rate_limit_max_requests, window_s),
            settings.rate_limit_storage,
            settings.redis_key_prefix,
        )
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
        g.rate_limit = (budget.item, reset, remaining)
        if not allowed:
            metrics.rate_limited()
            raise TooManyRequests(retry_after=reset - time.time())

    @staticmethod
    def _add_headers(response: Response) -> Response:
        state = g.get("rate_limit")
        if state is not None:
            item, reset, remaining = state
            # add(), not set(): nothing else writes these, so skip set()'s scan.
            add = response.headers.add
            add("RateLimit-Policy", f"{item.amount};w={item.get_expiry()}")
            add("RateLimit-Limit", str(item.amount))
            add("RateLimit-Remaining", str(max(0, remaining)))
            add("RateLimit-Reset", str(_seconds_until(reset)))
        return response
