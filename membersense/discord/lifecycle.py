"""A bot connection's lifecycle: one state field, its transitions in one place.

::

    NEW ──> STARTING ──> READY ──> FAILED
     │          │          │         │
     └──────────┴──────────┴─────────┴──> CLOSING ──> CLOSED

STARTING covers the login: the token check over REST, the gateway's READY
and every guild's GUILD_CREATE. READY means the guilds are known and
published (member lists may still be loading). FAILED means the connection
ended for good after a successful login (a revoked token, a final close
code): its sessions must end. Every other method asks :attr:`Lifecycle.state`
instead of combining flags.

The state is written on the event loop only; other threads may read it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

from membersense.discord.errors import Failure

__all__ = ["Lifecycle", "State"]


class State(enum.Enum):
    """Where a bot connection is in its life."""

    NEW = "new"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    CLOSING = "closing"
    CLOSED = "closed"


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.STARTING, State.CLOSING}),
    State.STARTING: frozenset({State.READY, State.CLOSING}),
    State.READY: frozenset({State.FAILED, State.CLOSING}),
    State.FAILED: frozenset({State.CLOSING}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class Lifecycle:
    """The state of one connection, and a way to wait for it (and anything else) to change.

    *failure* is set with FAILED; *close_reason* with CLOSING; *on_change()*
    hears of every transition.
    """

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.state = State.NEW
        self.failure: Failure | None = None
        self.close_reason: str | None = None
        self._changed: asyncio.Event | None = None
        self._on_change = on_change

    def __repr__(self) -> str:
        return f"<Lifecycle {self.state.value}>"

    def advance(
        self, to: State, *, failure: Failure | None = None, reason: str | None = None
    ) -> None:
        """Move to *to*; a transition the diagram above lacks is a bug (RuntimeError)."""
        if to not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"a connection cannot go from {self.state.value} to {to.value}")
        self.state = to
        if to is State.FAILED:
            self.failure = failure
        if to is State.CLOSING:
            self.close_reason = reason
        self.notify()
        self._on_change()

    @property
    def ending(self) -> bool:
        """CLOSING or CLOSED."""
        return self.state in (State.CLOSING, State.CLOSED)

    def notify(self) -> None:
        """Wake everything waiting in :meth:`wait_until` to check again. Loop only."""
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until *predicate()* holds, checking again on every :meth:`notify`.

        *predicate* may raise to end the wait. Callers bound the wait.
        """
        while not predicate():
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
