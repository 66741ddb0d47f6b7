"""Sessions: who is logged in, as records in a store, apart from Discord connections.

- :mod:`~membersense.sessions.store`: :class:`SessionRecord` and the
  :class:`SessionStore` interface (atomic open-under-the-caps, get, close,
  expiry, counts).
- :mod:`~membersense.sessions.memory`: the process-local store (the default).
- :mod:`~membersense.sessions.manager`: logging in and out, authenticating a
  request's session, and the idle sweeper, over a store and the Discord service.

A session names its bot by token fingerprint; it holds no connection. The
connection pool (:mod:`membersense.discord.pool`) keeps a bot connected while
the store has sessions of it.
"""

from membersense.sessions.manager import LoginRefused, SessionManager
from membersense.sessions.memory import MemorySessionStore
from membersense.sessions.store import (
    ID_LENGTH,
    Caps,
    Refusal,
    SessionRecord,
    SessionStore,
    StoreUnavailable,
)

__all__ = [
    "ID_LENGTH",
    "Caps",
    "LoginRefused",
    "MemorySessionStore",
    "Refusal",
    "SessionManager",
    "SessionRecord",
    "SessionStore",
    "StoreUnavailable",
]
