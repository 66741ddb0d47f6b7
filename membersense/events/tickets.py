"""One-time tickets that open an event stream without a session id in the URL.

Browsers' ``EventSource`` cannot send an ``Authorization`` header, and a
session id in a URL ends up in proxy and platform logs. A client with a
session asks for a ticket (``POST /api/events/ticket``) and opens the stream
with ``?ticket=``: the ticket names the session, works once, and only for 60
seconds, so one that leaks into a log is worthless.

The interface is what a shared store (Redis: ``SET`` with an expiry, ``GETDEL``)
does atomically; :class:`MemoryTicketStore` is the process-local one.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

__all__ = ["TICKET_TTL_S", "MemoryTicketStore", "TicketStore"]

#: How long a ticket can be redeemed, in seconds.
TICKET_TTL_S = 60.0
#: What a ticket looks like (``secrets.token_urlsafe(24)``): anything else is never looked up.
_TICKET = re.compile(r"[A-Za-z0-9_-]{32}")


class TicketStore(ABC):
    """Tickets by value, each naming a session (see the module docstring)."""

    @abstractmethod
    def issue(self, session_id: str) -> str:
        """A new ticket for *session_id*, valid for :data:`TICKET_TTL_S`."""

    @abstractmethod
    def redeem(self, ticket: str) -> str | None:
        """The session id of *ticket*, once; None if unknown, used or expired."""

    @abstractmethod
    def forget_session(self, session_id: str) -> None:
        """Drop the tickets of a session that ended."""


class MemoryTicketStore(TicketStore):
    """Tickets of this process, behind one lock; expired ones are dropped as new ones come.

    *clock* is monotonic seconds (tests move a fake one).
    """

    def __init__(
        self, *, ttl_s: float = TICKET_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._tickets: dict[str, tuple[str, float]] = {}  # ticket → (session, expiry); oldest first

    def __repr__(self) -> str:
        return f"<MemoryTicketStore tickets={len(self._tickets)}>"

    def __len__(self) -> int:
        return len(self._tickets)

    def issue(self, session_id: str) -> str:
        """A new ticket for *session_id*."""
        ticket = secrets.token_urlsafe(24)
        with self._lock:
            now = self._clock()
            while self._tickets:
                oldest, (_, expiry) = next(iter(self._tickets.items()))
                if expiry > now:
                    break
                del self._tickets[oldest]
            self._tickets[ticket] = (session_id, now + self.ttl_s)
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The ticket's session id, once and before it expires."""
        if not _TICKET.fullmatch(ticket):
            return None
        with self._lock:
            found = self._tickets.pop(ticket, None)
            now = self._clock()
        if found is None or found[1] <= now:
            return None
        return found[0]

    def forget_session(self, session_id: str) -> None:
        """Drop the session's tickets."""
        with self._lock:
            for ticket in [t for t, (s, _) in self._tickets.items() if s == session_id]:
                del self._tickets[ticket]
