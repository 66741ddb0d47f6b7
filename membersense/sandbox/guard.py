"""Discord's invalid request limit (a Cloudflare ban), per client IP.

Discord: an IP that gets more than 10 000 answers with status 401, 403 or 429 within 10
minutes is banned from the API for a while; 429s with ``X-RateLimit-Scope: shared`` do not
count.  The ban is Cloudflare's, not the API's: a 429 with an HTML body, ``Retry-After``, no
JSON, no rate-limit headers and no ``Via`` header.  discord.py recognises exactly that shape
("Banned by Cloudflare more than likely") and raises instead of retrying.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from aiohttp import web

_BAN_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Access denied | discord.com used Cloudflare to restrict access</title>"
    "</head>\n<body><h1>Error 1015</h1><p>You are being rate limited.</p>"
    "<p>The owner of this website (discord.com) has banned you temporarily from accessing this website.</p>"
    "</body></html>\n"
)


class InvalidRequestGuard:
    """Counts invalid answers per client IP and bans IPs over the limit (``limit`` None: off)."""

    def __init__(
        self, limit: int | None, window_s: float, ban_s: float, clock: Callable[[], float]
    ) -> None:
        self.limit = limit
        self._window_s = window_s
        self._ban_s = ban_s
        self._clock = clock
        self._invalid: dict[str, deque[float]] = {}
        self._banned_until: dict[str, float] = {}

    def ban_remaining(self, ip: str) -> float:
        """Seconds left on ``ip``'s ban (0 when not banned)."""
        until = self._banned_until.get(ip)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._banned_until[ip]
            return 0.0
        return left

    def record(self, ip: str, status: int, scope: str | None) -> None:
        """Count an answer to ``ip`` if Discord would count it as invalid."""
        if self.limit is None:
            return
        if status not in (401, 403, 429) or (status == 429 and scope == "shared"):
            return
        now = self._clock()
        times = self._invalid.setdefault(ip, deque())
        times.append(now)
        while times and times[0] <= now - self._window_s:
            times.popleft()
        if len(times) > self.limit:
            self._banned_until[ip] = now + self._ban_s
            times.clear()

    def ban_response(self, seconds_left: float) -> web.Response:
        """Cloudflare's ban page."""
        return web.Response(
            status=429,
            text=_BAN_PAGE,
            content_type="text/html",
            headers={"Retry-After": str(max(1, math.ceil(seconds_left)))},
        )

    def reset(self) -> None:
        """Forget counts and bans."""
        self._invalid.clear()
        self._banned_until.clear()

    def stats(self) -> dict[str, object]:
        """Counts for ``/_sandbox/state``."""
        return {
            "limit": self.limit,
            "banned": sorted(ip for ip in list(self._banned_until) if self.ban_remaining(ip)),
        }
