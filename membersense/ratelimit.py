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
"""

from __future__ import annotations

import logging
import math
import threading
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from membersense import metrics
from membersense.config import Settings
from membersense.errors import TooManyRequests

__all__ = ["PrunedMemoryStorage", "RateLimiting"]

log = logging.getLogger("membersense.ratelimit")

#: How long to serve from the in-memory fallback before trying the shared storage again.
RETRY_SHARED_STORAGE_S = 30.0


class PrunedMemoryStorage(MemoryStorage):
    """``limits``' in-memory storage, forgetting clients whose window emptied.

    Its expiry timer trims each client's moving window but leaves an empty
    list behind per address ever seen (limits 5.x), so memory would grow with
    every new client IP. This drops those keys too.
    """

    # Its own scheme name: the base class's metaclass registers subclasses by
    # scheme, and inheriting "memory" would replace limits' own storage globally.
    STORAGE_SCHEME = ["membersense-memory"]

    def _MemoryStorage__expire_events(self) -> None:  # the timer's (name-mangled) callback
        super()._MemoryStorage__expire_events()  # type: ignore[misc]
        for key in [k for k, events in list(self.events.items()) if not events]:
            with self.locks[key]:
                if not self.events.get(key):
                    self.events.pop(key, None)
                    self.locks.pop(key, None)


def _make_storage(uri: str) -> Storage:
    if uri.startswith("memory://"):
        return PrunedMemoryStorage()
    # wrap_exceptions: any backend failure surfaces as limits' StorageError.
    return storage_from_string(uri, wrap_exceptions=True)  # type: ignore[return-value]


class _Budget:
    """One app's limit on its shared storage, with an in-memory fallback for outages."""

    def __init__(self, item: RateLimitItem, storage_uri: str) -> None:
        self.item = item
        self._storage_uri = storage_uri
        self._shared: MovingWindowRateLimiter | None = None
        self._fallback: MovingWindowRateLimiter | None = None
        self._next_probe = 0.0
        self._lock = threading.Lock()

    @property
    def storage(self) -> Storage:
        """Where windows are counted while the storage is healthy."""
        return self._shared_limiter().storage

    def _shared_limiter(self) -> MovingWindowRateLimiter:
        # Built on first use: the in-memory storage starts a timer thread, and
        # nothing may start before the app serves (in gunicorn's worker).
        shared = self._shared
        if shared is None:
            with self._lock:
                if self._shared is None:
                    self._shared = MovingWindowRateLimiter(_make_storage(self._storage_uri))
                shared = self._shared
        return shared

    def _limiter(self) -> MovingWindowRateLimiter:
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
            allowed = limiter.hit(self.item, key)
            reset, remaining = limiter.get_window_stats(self.item, key)
        except StorageError:
            if limiter is self._fallback:  # memory never fails; this is something else
                raise
            # A storage outage (Redis down) must not take the API down with it.
            with self._lock:
                if self._fallback is None:
                    log.warning("rate limit storage unreachable; counting in memory meanwhile")
                    self._fallback = MovingWindowRateLimiter(PrunedMemoryStorage())
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
        )
        app.before_request(self._check)
        app.after_request(self._add_headers)

    def _check(self) -> None:
        # A browser preflight is not a request for data; counting it would
        # halve the budget of every front end that sends Authorization.
        req = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
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
