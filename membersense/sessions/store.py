"""Session records and the interface every session store implements.

The interface is what a shared store (Redis) can do atomically and what the
memory store does under one lock: open a session only if no cap would be
passed, look one up (restarting its idle timer), close it, expire idle ones,
count. Nothing in it hands out a shared Python object: records are immutable
values, copied in and out.

A session is opened *pending* before the slow part of a login (connecting the
bot), so concurrent logins can never pass the caps, and is *activated* with the
bot's guilds once the login succeeded. A pending session that is never
activated (its process died mid-login) expires after the pending timeout.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "ENDED_ELSEWHERE",
    "ID_LENGTH",
    "Caps",
    "EndListener",
    "Refusal",
    "SessionRecord",
    "SessionStore",
    "StoreUnavailable",
    "valid_session_id",
]

#: Length of a session id (nanoid's default).
ID_LENGTH = 21
#: The reason an end listener is given for a session another process ended (Redis mode):
#: that process logged it.
ENDED_ELSEWHERE = "ended elsewhere"
#: nanoid's default alphabet; an Authorization value outside it is never looked up.
_ID_ALPHABET = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def valid_session_id(value: str) -> bool:
    """Whether *value* could be a session id at all (checked before any lookup)."""
    return len(value) == ID_LENGTH and _ID_ALPHABET.issuperset(value)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One logged-in client, as stored.

    *guild_ids* are the bot's guilds at login, the default one first (empty
    while the login is under way). *created_at* is wall-clock epoch seconds;
    *last_activity* is in the store's own clock.
    """

    id: str
    fingerprint: str
    guild_ids: tuple[str, ...]
    created_at: float
    last_activity: float
    client: str | None = None
    pending: bool = True
    #: The bot token, sealed (Redis mode keeps it so any process can act for the session).
    sealed_token: str | None = field(default=None, repr=False, compare=False)

    @property
    def short_id(self) -> str:
        """The first characters of the id: enough to follow a session in logs."""
        return self.id[:6]

    @property
    def default_guild_id(self) -> int | None:
        """The guild a request without ``guildId`` reads."""
        return int(self.guild_ids[0]) if self.guild_ids else None


class Caps(NamedTuple):
    """How many sessions may be open at once: in all, per bot token, per client address."""

    total: int
    per_token: int
    per_client: int


class Refusal(enum.Enum):
    """Why :meth:`SessionStore.open` did not open a session."""

    FULL = "full"  # the total cap
    TOKEN = "token"  # the per-token cap
    CLIENT = "client"  # the per-client-address cap
    CLOSED = "closed"  # the store is shutting down


EndListener = Callable[["SessionRecord", str], None]


class StoreUnavailable(Exception):
    """The session store cannot be reached (Redis is down); *retry_after* in seconds."""

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__("Session store unavailable")
        self.retry_after = retry_after


class SessionStore(ABC):
    """Where session records live (see the module docstring).

    Every session this store removes (logout, expiry found here, shutdown…)
    is reported to the end listener, outside any lock, with the reason.
    """

    @abstractmethod
    def set_end_listener(self, on_end: EndListener | None) -> None:
        """Report every session removed from now on to *on_end(record, reason)*."""

    @abstractmethod
    def open(self, record: SessionRecord, caps: Caps) -> Refusal | None:
        """Add *record* (pending) unless a cap would be passed; atomically. None: opened."""

    @abstractmethod
    def activate(self, session_id: str, guild_ids: tuple[str, ...]) -> SessionRecord | None:
        """Mark a pending session logged in with *guild_ids*; None if it is gone meanwhile."""

    @abstractmethod
    def get(self, session_id: str) -> SessionRecord | None:
        """The live, logged-in session with this id, its idle timer restarted; else None.

        An expired session found here is removed (and reported as expired).
        """

    @abstractmethod
    def close(self, session_id: str, reason: str = "logout") -> SessionRecord | None:
        """Remove a session (pending or not); the removed record, or None."""

    @abstractmethod
    def close_for(self, fingerprint: str, reason: str) -> list[SessionRecord]:
        """Remove every logged-in session of one bot (its token was revoked, say).

        Pending ones stay: their login is still deciding.
        """

    @abstractmethod
    def expire(self) -> list[SessionRecord]:
        """Remove and return every session idle for too long (and stale pending ones)."""

    @abstractmethod
    def shutdown(self) -> list[SessionRecord]:
        """This process stops: refuse new sessions, and end those that die with it.

        A process-local store removes (and returns) every session; a shared one
        keeps them for the other processes and returns none. Idempotent.
        """

    @abstractmethod
    def refuse_new(self) -> None:
        """Refuse new sessions from now on; open ones carry on."""

    @abstractmethod
    def count(self) -> int:
        """Sessions open now (pending ones included)."""

    @abstractmethod
    def count_for(self, fingerprint: str) -> int:
        """Sessions of one bot open now (pending ones included)."""

    @abstractmethod
    def fingerprints(self) -> set[str]:
        """Bots with sessions now: every one (a process-local store) or those this process
        has seen lately (a shared store, whose other sessions expire by themselves)."""
