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

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from membersense.config import Settings
from membersense.errors import TooManyRequests, json_error

__all__ = ["limiter", "init_app"]

#: The process's limiter. Views opt out with ``@limiter.exempt``.
limiter = Limiter(
    key_func=get_remote_address,
    strategy="moving-window",
    # Flask-Limiter's own headers use epoch resets and add Retry-After to every
    # response; we send the IETF draft's RateLimit-* headers ourselves.
    headers_enabled=False,
)


def _seconds_until(timestamp: float) -> int:
    return max(0, math.ceil(timestamp - time.time()))


def _add_headers(response: Response) -> Response:
    current = limiter.current_limit
    if current is not None:
        window = current.limit.get_expiry()
        response.headers["RateLimit-Policy"] = f"{current.limit.amount};w={window}"
        response.headers["RateLimit-Limit"] = str(current.limit.amount)
        response.headers["RateLimit-Remaining"] = str(max(0, current.remaining))
        response.headers["RateLimit-Reset"] = str(_seconds_until(current.reset_at))
    return response


def _too_many_requests(error: RateLimitExceeded) -> Response:
    current = limiter.current_limit
    retry_after = max(1, _seconds_until(current.reset_at)) if current is not None else 1
    return json_error(
        429,
        TooManyRequests.description,
        extra={"retryAfter": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def init_app(app: Flask, settings: Settings) -> None:
    """Configure the limiter from *settings* and attach it to *app*."""
    window_s = settings.rate_limit_window // 1000
    app.config.update(
        RATELIMIT_APPLICATION=f"{settings.rate_limit_max_requests} per {window_s} second",
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage_uri,
        RATELIMIT_STRATEGY="moving-window",
        RATELIMIT_HEADERS_ENABLED=False,
        # A browser preflight is not a request for data; counting it would
        # halve the budget of every front end that sends Authorization.
        RATELIMIT_APPLICATION_EXEMPT_WHEN=lambda: request.method == "OPTIONS",
        # A storage outage (Redis down) must not take the API down with it.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_KEY_PREFIX="membersense",
    )
    limiter.init_app(app)
    app.after_request(_add_headers)
    app.register_error_handler(RateLimitExceeded, _too_many_requests)
