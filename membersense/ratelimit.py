"""Per-client-IP sliding-window rate limiting.

The original design kept a hand-written list of timestamps per IP. Here the
same sliding window is Flask-Limiter's *moving window* strategy on a `limits`
storage: it is the same algorithm, already tested, keeps memory bounded (idle
keys expire), and its storage is pluggable, so ``RATE_LIMIT_STORAGE_URI=redis://``
shares one budget between several MemberSense processes.

One application-wide limit covers every route (as the original counted every
request against one budget per IP), except the health check and CORS
preflights. The client IP is the socket peer; werkzeug's ``ProxyFix`` (see the
app factory) replaces it with the ``X-Forwarded-For`` entry of the configured
number of trusted proxies, so a client cannot pick its own address.
"""

from __future__ import annotations

import math
import time

from flask import Blueprint, Flask, Response, current_app, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits.storage import MemoryStorage

from membersense.config import Settings
from membersense.errors import TooManyRequests, json_error

__all__ = ["RateLimiting"]


class PrunedMemoryStorage(MemoryStorage):
    """``limits``' in-memory storage, forgetting clients whose window emptied.

    Its expiry timer trims each client's moving window but leaves an empty
    list behind per address ever seen (limits 5.x), so memory would grow with
    every new client IP. This drops those keys too.
    """

    STORAGE_SCHEME = ["membersense-memory"]

    def _MemoryStorage__expire_events(self) -> None:  # the timer's (name-mangled) callback
        super()._MemoryStorage__expire_events()  # type: ignore[misc]
        for key in [k for k, events in list(self.events.items()) if not events]:
            with self.locks[key]:
                if not self.events.get(key):
                    self.events.pop(key, None)
                    self.locks.pop(key, None)


def _storage_uri(settings: Settings) -> str:
    uri = settings.rate_limit_storage_uri
    return "membersense-memory://" if uri.startswith("memory://") else uri


def _seconds_until(timestamp: float) -> int:
    return max(0, math.ceil(timestamp - time.time()))


class RateLimiting:
    """The Flask extension giving each app its own Flask-Limiter.

    A ``Limiter`` keeps its limits and storage on itself, so one per app
    (in ``app.extensions``) keeps apps, and tests, from sharing budgets.
    """

    key = "membersense.limiter"

    def __init__(self) -> None:
        self._exempt_blueprints: set[str] = set()

    def exempt(self, blueprint: Blueprint) -> Blueprint:
        """Never count requests to *blueprint* (health checks)."""
        self._exempt_blueprints.add(blueprint.name)
        return blueprint

    @property
    def limiter(self) -> Limiter:
        """The current app's limiter."""
        return current_app.extensions[self.key]

    def init_app(self, app: Flask, settings: Settings) -> None:
        """Build *app*'s limiter from *settings*: its window, budget and storage."""
        window_s = settings.rate_limit_window // 1000
        limiter = Limiter(
            key_func=get_remote_address,
            application_limits=[f"{settings.rate_limit_max_requests} per {window_s} second"],
            # A browser preflight is not a request for data; counting it would
            # halve the budget of every front end that sends Authorization.
            application_limits_exempt_when=self._is_exempt,
            storage_uri=_storage_uri(settings),
            strategy="moving-window",
            key_prefix="membersense",
            # Flask-Limiter's own headers use epoch resets and add Retry-After
            # to every response; we send the IETF draft's RateLimit-* ourselves.
            headers_enabled=False,
            # A storage outage (Redis down) must not take the API down with it.
            in_memory_fallback_enabled=True,
        )
        limiter.init_app(app)
        app.extensions[self.key] = limiter
        app.after_request(self._add_headers)
        app.register_error_handler(RateLimitExceeded, self._too_many_requests)

    def _is_exempt(self) -> bool:
        return request.method == "OPTIONS" or request.blueprint in self._exempt_blueprints

    def _add_headers(self, response: Response) -> Response:
        current = self.limiter.current_limit
        if current is not None:
            response.headers["RateLimit-Policy"] = (
                f"{current.limit.amount};w={current.limit.get_expiry()}"
            )
            response.headers["RateLimit-Limit"] = str(current.limit.amount)
            response.headers["RateLimit-Remaining"] = str(max(0, current.remaining))
            response.headers["RateLimit-Reset"] = str(_seconds_until(current.window.reset_time))
        return response

    def _too_many_requests(self, error: RateLimitExceeded) -> Response:
        current = self.limiter.current_limit
        # Flask-Limiter's reset_at rounds up by a second; the window has the exact time.
        retry_after = max(1, _seconds_until(current.window.reset_time)) if current else 1
        return json_error(
            429,
            TooManyRequests.description,
            extra={"retryAfter": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
