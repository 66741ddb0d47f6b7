"""Discord's REST rate limits: fixed-window buckets per bot, route template and major parameter.

Each bucket is identified to clients by ``X-RateLimit-Bucket`` (a hash of the route template,
the same for every major parameter, as Discord does) and reported on every answer through
Discord's ``X-RateLimit-*`` headers.  An exhausted bucket answers 429 with scope ``user``; the
optional per-bot global limit answers 429 with scope ``global``.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from aiohttp import web

from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.responses import json_response

RATE_LIMITED_MESSAGE = "You are being rate limited."
#: Discord's edge adds this header to genuine API answers; discord.py treats a 429 without it
#: as a Cloudflare ban and gives up instead of waiting.
VIA_HEADER = {"Via": "1.1 google"}


@dataclass
class RateLimitInfo:
    """The outcome of one request against its bucket, for the response headers."""

    limit: int
    remaining: int
    reset_after: float
    bucket: str
    limited: bool = False
    retry_after: float = 0.0
    scope: str | None = None

    @property
    def is_global(self) -> bool:
        """Whether the global (per bot) limit was hit."""
        return self.scope == "global"

    def headers(self) -> dict[str, str]:
        """Discord's rate-limit headers (plus Retry-After and the scope on a 429)."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": f"{time.time() + self.reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{self.reset_after:.3f}",
            "X-RateLimit-Bucket": self.bucket,
        }
        if self.limited:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
            headers["X-RateLimit-Scope"] = self.scope or "user"
            if self.is_global:
                headers["X-RateLimit-Global"] = "true"
        return headers


def rate_limited_response(
    retry_after: float, *, scope: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Discord's 429 answer: JSON body with ``retry_after`` and ``global``, scope and Retry-After headers."""
    all_headers = dict(VIA_HEADER)
    if headers:
        all_headers.update(headers)
    all_headers.setdefault("Retry-After", str(max(1, math.ceil(retry_after))))
    all_headers["X-RateLimit-Scope"] = scope
    if scope == "global":
        all_headers["X-RateLimit-Global"] = "true"
    body = {
        "message": RATE_LIMITED_MESSAGE,
        "retry_after": round(retry_after, 3),
        "global": scope == "global",
        "code": 0,
    }
    return json_response(body, 429, all_headers)


class _Window:
    __slots__ = ("limit", "window_s", "remaining", "reset_at")

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.remaining = limit
        self.reset_at = 0.0

    def roll(self, now: float) -> None:
        if now >= self.reset_at:
            self.remaining = self.limit
            self.reset_at = now + self.window_s


class RateLimiter:
    """Per-bot, per-route buckets (and an optional per-bot global limit) on the config's clock."""

    _PRUNE_EVERY = 1024

    def __init__(self, config: SandboxConfig) -> None:
        self._config = config
        self._clock = config.clock
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self._global: dict[str, _Window] = {}
        self._hashes: dict[str, str] = {}
        self._hits = 0

    def bucket_hash(self, route_key: str) -> str:
        """The opaque ``X-RateLimit-Bucket`` of a route key like ``GET /guilds/{guild_id}``."""
        digest = self._hashes.get(route_key)
        if digest is None:
            digest = self._hashes[route_key] = hashlib.md5(
                route_key.encode(), usedforsecurity=False
            ).hexdigest()
        return digest

    def _limits(self, route_key: str) -> tuple[int, float]:
        return self._config.route_limits.get(
            route_key, (self._config.rate_limit_per_route, self._config.rate_limit_window_s)
        )

    def hit(self, identity: str, route_key: str, major: str) -> RateLimitInfo:
        """Count one request of ``identity`` (a bot or a client address) on ``route_key`` + ``major``."""
        now = self._clock()
        self._hits += 1
        if self._hits % self._PRUNE_EVERY == 0:
            self._prune(now)
        bucket = self.bucket_hash(route_key)
        key = (identity, bucket, major)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(*self._limits(route_key))
        window.roll(now)

        global_window = None
        global_limit = self._config.global_rate_limit
        if global_limit is not None and identity.startswith("bot:"):
            global_window = self._global.get(identity)
            if global_window is None:
                global_window = self._global[identity] = _Window(global_limit, 1.0)
            global_window.roll(now)
            if global_window.remaining <= 0:
                retry = global_window.reset_at - now
                return RateLimitInfo(
                    window.limit,
                    window.remaining,
                    window.reset_at - now,
                    bucket,
                    limited=True,
                    retry_after=retry,
                    scope="global",
                )

        if window.remaining <= 0:
            retry = window.reset_at - now
            return RateLimitInfo(
                window.limit, 0, retry, bucket, limited=True, retry_after=retry, scope="user"
            )
        window.remaining -= 1
        if global_window is not None:
            global_window.remaining -= 1
        return RateLimitInfo(window.limit, window.remaining, window.reset_at - now, bucket)

    def _prune(self, now: float) -> None:
        # Windows past their reset carry no state worth keeping (a new one starts full).
        for route_key in [k for k, w in self._windows.items() if w.reset_at <= now]:
            del self._windows[route_key]
        for global_key in [k for k, w in self._global.items() if w.reset_at <= now]:
            del self._global[global_key]

    def reset(self) -> None:
        """Forget every bucket (the control API's reset)."""
        self._windows.clear()
        self._global.clear()
