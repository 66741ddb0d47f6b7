"""Event-stream tickets in Redis: issued by any process, redeemed by any other.

A browser asks one worker or instance for a ticket and its ``EventSource`` may
reach another: the ticket is a key with a 60 s expiry (``SET … PX``), redeemed
once with ``GETDEL``. A session's tickets need no forgetting when it ends:
they expire within a minute, and one redeemed for an ended session opens
nothing (the stream checks its session).
"""

from __future__ import annotations

import re
import secrets

from membersense.cluster.connection import RedisConnection
from membersense.events.tickets import TICKET_TTL_S, TicketStore

__all__ = ["RedisTicketStore"]

_TICKET = re.compile(r"[A-Za-z0-9_-]{32}")


class RedisTicketStore(TicketStore):
    """Tickets shared by every process (see the module docstring)."""

    def __init__(self, connection: RedisConnection, *, ttl_s: float = TICKET_TTL_S) -> None:
        self._redis = connection
        self._keys = connection.keys
        self.ttl_s = ttl_s

    def __repr__(self) -> str:
        return "<RedisTicketStore>"

    def issue(self, session_id: str) -> str:
        """A new ticket for *session_id*."""
        ticket = secrets.token_urlsafe(24)
        key, ttl_ms = self._keys.ticket(ticket), int(self.ttl_s * 1000)
        self._redis.call(lambda: self._redis.client.set(key, session_id, px=ttl_ms))
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The ticket's session id, once and before it expires."""
        if not _TICKET.fullmatch(ticket):
            return None
        key = self._keys.ticket(ticket)
        found = self._redis.call(lambda: self._redis.client.getdel(key))
        return found.decode() if found else None

    def forget_session(self, session_id: str) -> None:
        """Nothing: its tickets expire within a minute and open nothing once it ended."""
