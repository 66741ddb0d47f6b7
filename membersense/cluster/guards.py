"""The invalid-request guards of Redis mode, shared by every process of one egress.

Discord's invalid-request ban is about one IP address, so every instance
behind it shares one count (see :mod:`membersense.discord.invalid_requests`
for what the guards do). Discord's answers are recorded on the event loop,
so recording goes through the :class:`~membersense.cluster.writer.Writer`;
checks happen on request threads, at most once a second per process against
Redis (:data:`CHECK_EVERY_S`), from a local copy in between.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from membersense.cluster.connection import RedisConnection
from membersense.cluster.writer import Writer
from membersense.discord.errors import HeldBack, InvalidToken
from membersense.discord.invalid_requests import (
    FAILED_TOKEN_TTL_S,
    INVALID_REQUEST_WINDOW_S,
    TENANT_CAPACITY,
    TENANT_HELD_BACK,
    counts_as_invalid,
    tenant_limit,
)
from membersense.discord.tokens import fingerprint

__all__ = ["SharedFailedTokens", "SharedInvalidRequestBudget"]

#: How often one process asks Redis whether the budget is spent.
CHECK_EVERY_S = 1.0


class SharedInvalidRequestBudget:
    """Discord's 401/403/429 answers to the whole cluster over a sliding window, and each
    bot's share of them (see :class:`~membersense.discord.invalid_requests.InvalidRequestBudget`)."""

    def __init__(
        self,
        connection: RedisConnection,
        writer: Writer,
        limit: int,
        *,
        window_s: float = INVALID_REQUEST_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = connection
        self._keys = connection.keys
        self._writer = writer
        self.limit = limit
        self.tenant_limit = tenant_limit(limit)
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (when this process last asked Redis, seconds left then)
        self._checked: dict[str, tuple[float, float]] = {}
        #: Invalid answers this process recorded (diagnostics).
        self.total = 0

    def __repr__(self) -> str:
        return f"<SharedInvalidRequestBudget limit={self.limit} per {self.window_s:g}s>"

    def record(self, status: int, scope: str | None = None, tenant: str | None = None) -> None:
        """Count one Discord answer if Discord counts it (never blocks)."""
        if not counts_as_invalid(status, scope):
            return
        self.total += 1
        keys = [self._keys.invalid_requests()]
        if tenant is not None:
            keys.append(self._keys.invalid_requests(tenant))
        window_ms = int(self.window_s * 1000)
        member = f"{time.time():.6f}:{secrets.token_hex(4)}"
        now_ms = int(time.time() * 1000)

        def write(pipeline: Any) -> None:
            for key in keys:
                pipeline.zadd(key, {member: now_ms})
                pipeline.zremrangebyscore(key, "-inf", now_ms - window_ms)
                pipeline.pexpire(key, window_ms)

        self._writer.submit(write)
        with self._lock:
            for key in keys:
                self._checked.pop(key, None)  # look again at the next check

    def _spent_for(self, key: str, limit: int) -> float:
        now = self._clock()
        with self._lock:
            checked = self._checked.get(key)
        if checked is not None and now - checked[0] < CHECK_EVERY_S:
            return max(0.0, checked[1] - (now - checked[0]))
        window_ms = int(self.window_s * 1000)
        now_ms = int(time.time() * 1000)

        def read() -> list[Any]:
            pipeline = self._redis.client.pipeline(transaction=False)
            pipeline.zremrangebyscore(key, "-inf", now_ms - window_ms)
            pipeline.zcard(key)
            # The answer whose leaving the window brings the count under the limit.
            pipeline.zrevrange(key, limit - 1, limit - 1, withscores=True)
            return list(pipeline.execute())

        _, count, pivot = self._redis.call(read)
        wait = 0.0
        if int(count) >= limit and pivot:
            wait = max(0.0, (float(pivot[0][1]) + window_ms - now_ms) / 1000)
        with self._lock:
            self._checked[key] = (now, wait)
            if len(self._checked) > TENANT_CAPACITY:
                self._checked.clear()
        return wait

    def retry_after(self, tenant: str | None = None) -> float:
        """Seconds until Discord may be called again (for *tenant*); 0 while the budget lasts."""
        everyone = self._spent_for(self._keys.invalid_requests(), self.limit)
        if tenant is None:
            return everyone
        return max(
            everyone, self._spent_for(self._keys.invalid_requests(tenant), self.tenant_limit)
        )

    def check(self, tenant: str | None = None) -> None:
        """Raise :class:`HeldBack` instead of a call to Discord while the budget is spent,
        or *tenant*'s share of it."""
        everyone = self._spent_for(self._keys.invalid_requests(), self.limit)
        own = (
            self._spent_for(self._keys.invalid_requests(tenant), self.tenant_limit)
            if tenant is not None
            else 0.0
        )
        if everyone > 0 or own > 0:
            raise HeldBack(
                None if everyone >= own else TENANT_HELD_BACK, retry_after=max(everyone, own)
            )


class SharedFailedTokens:
    """Tokens Discord refused lately, by fingerprint, for the whole cluster."""

    def __init__(self, connection: RedisConnection, *, ttl_s: float = FAILED_TOKEN_TTL_S) -> None:
        self._redis = connection
        self._keys = connection.keys
        self.ttl_s = ttl_s

    def __repr__(self) -> str:
        return "<SharedFailedTokens>"

    def add(self, token: str) -> None:
        """Remember that Discord refused *token*."""
        key = self._keys.failed_token(fingerprint(token))
        self._redis.call(lambda: self._redis.client.set(key, b"1", px=int(self.ttl_s * 1000)))

    def check(self, token: str) -> None:
        """Raise :class:`InvalidToken` if Discord refused *token* lately."""
        key = self._keys.failed_token(fingerprint(token))
        if self._redis.call(lambda: self._redis.client.exists(key)):
            raise InvalidToken()
