"""The Redis connection of Redis mode: key names, scripts, and a circuit for outages.

Every key starts with ``REDIS_KEY_PREFIX`` and a schema version
(``membersense:v1:``), so several deployments can share a Redis and a rolling
deploy that changes the layout does not read the old one.

:class:`RedisConnection` wraps redis-py's client. When Redis fails, every call
raises :class:`~membersense.sessions.store.StoreUnavailable` (503 "Session store
unavailable") and, for :data:`OPEN_CIRCUIT_S`, later calls fail at once instead
of each waiting for a socket timeout: request threads must not pile up behind
a dead Redis. A call after that tries again, so service resumes by itself.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from membersense.sessions.store import StoreUnavailable

__all__ = ["OPEN_CIRCUIT_S", "SCHEMA_VERSION", "Keys", "RedisConnection"]

log = logging.getLogger("membersense.cluster")

#: The layout of MemberSense's keys; bump it when the layout changes.
SCHEMA_VERSION = 1
#: After a failure, how long calls fail at once before Redis is tried again.
OPEN_CIRCUIT_S = 1.0
#: Bound on one Redis call (connect, or a read that is not a blocking one).
SOCKET_TIMEOUT_S = 2.0


class Keys:
    """Every key name MemberSense uses in Redis, in one place."""

    def __init__(self, prefix: str) -> None:
        self.base = f"{prefix}v{SCHEMA_VERSION}:"

    def session(self, session_id: str) -> str:
        """A session's hash."""
        return f"{self.base}session:{session_id}"

    @property
    def sessions(self) -> str:
        """Every live session id, scored by expiry (the total cap)."""
        return f"{self.base}sessions"

    def bot_sessions(self, bot: str) -> str:
        """One bot's session ids, scored by expiry (the per-token cap, the bot's liveness)."""
        return f"{self.base}bot:{bot}:sessions"

    def bot_of_sessions_key(self, key: str) -> str | None:
        """The bot a :meth:`bot_sessions` key is of (None for another key)."""
        head, tail = f"{self.base}bot:", ":sessions"
        if not (key.startswith(head) and key.endswith(tail)):
            return None
        return key[len(head) : -len(tail)] or None

    def client_sessions(self, client: str) -> str:
        """One client address's session ids (the per-client cap); the address is hashed."""
        digest = hashlib.sha256(client.encode()).hexdigest()[:16]
        return f"{self.base}client:{digest}:sessions"

    def lease(self, bot: str) -> str:
        """Who owns the bot's gateway connection: ``"<owner>:<fence>"``."""
        return f"{self.base}bot:{bot}:lease"

    def fence(self, bot: str) -> str:
        """The bot's lease counter: every new owner gets the next number."""
        return f"{self.base}bot:{bot}:fence"

    def view(self, bot: str) -> str:
        """The bot's published state (a hash)."""
        return f"{self.base}bot:{bot}:view"

    def members(self, bot: str, guild_id: int | str) -> str:
        """One guild's published member snapshot (a hash)."""
        return f"{self.base}bot:{bot}:guild:{guild_id}:members"

    def stream(self, topic: str) -> str:
        """A topic's events."""
        return f"{self.base}events:{topic}"

    def stream_epoch(self, topic: str) -> str:
        """A topic's epoch (changes when the topic restarts)."""
        return f"{self.base}events:{topic}:epoch"

    def ticket(self, ticket: str) -> str:
        """An event-stream ticket: the session id it opens."""
        return f"{self.base}ticket:{ticket}"

    def webhook(self, subscription_id: str) -> str:
        """A webhook subscription (a hash)."""
        return f"{self.base}webhook:{subscription_id}"

    def session_webhooks(self, session_id: str) -> str:
        """A session's webhook subscriptions (a set of ids)."""
        return f"{self.base}session:{session_id}:webhooks"

    def bot_webhooks(self, bot: str) -> str:
        """A bot's webhook subscriptions (a set of ids)."""
        return f"{self.base}bot:{bot}:webhooks"

    def failed_token(self, bot: str) -> str:
        """A token Discord refused lately."""
        return f"{self.base}failed-token:{bot}"

    def invalid_requests(self, bot: str | None = None) -> str:
        """Discord's 401/403/429 answers to this egress (or to one bot), scored by time."""
        return f"{self.base}invalid-requests" + (f":{bot}" if bot else "")

    @property
    def notices(self) -> str:
        """The pub/sub channel of cluster notices (session ends, lease releases)."""
        return f"{self.base}notices"


class RedisConnection:
    """redis-py clients for one Redis, with the outage circuit (see the module docstring).

    Nothing connects until the first call. *clock* is monotonic seconds.
    """

    def __init__(
        self, url: str, prefix: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self._clock = clock
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._down = False

    def __repr__(self) -> str:
        return f"<RedisConnection {'down' if self._down else 'up'} prefix={self.keys.base!r}>"

    def blocking_client(self, longest_block_s: float) -> redis.Redis:
        """A client for calls that wait in Redis (XREAD BLOCK) up to *longest_block_s*."""
        return redis.Redis.from_url(
            self.url,
            socket_timeout=longest_block_s + SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )

    def script(self, source: str) -> Any:
        """A Lua script, run by EVALSHA (loaded again whenever Redis forgot it)."""
        return self.client.register_script(source)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run *fn* (a use of :attr:`client`); Redis trouble raises StoreUnavailable.

        (Any: redis-py types its answers as the union of its sync and async clients'.)
        """
        now = self._clock()
        if now < self._open_until:
            raise StoreUnavailable(retry_after=self._open_until - now + OPEN_CIRCUIT_S)
        try:
            result = fn()
        except redis.RedisError as exc:
            self.failed(exc)
            raise StoreUnavailable(retry_after=OPEN_CIRCUIT_S) from None
        if self._down:
            with self._lock:
                if self._down:
                    self._down = False
                    log.warning("Redis is reachable again")
        return result

    def failed(self, exc: BaseException) -> None:
        """Note a failed call: open the circuit (and say so once per outage)."""
        with self._lock:
            self._open_until = self._clock() + OPEN_CIRCUIT_S
            if not self._down:
                self._down = True
                log.error("Redis is unreachable: %s", type(exc).__name__)

    def ping(self) -> bool:
        """Whether Redis answers now (the readiness check)."""
        try:
            self.call(self.client.ping)
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()
