"""The session store of one process: a dict behind one lock.

Indexes by bot fingerprint and client address keep the caps and the per-bot
counts O(1). Every removal, whatever its cause, is reported to *on_end*
outside the lock, so whoever keeps Discord connections for sessions (the
manager) learns of expiries too.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable

from membersense.sessions.store import Caps, EndListener, Refusal, SessionRecord, SessionStore

__all__ = ["MemorySessionStore"]

Clock = Callable[[], float]


class MemorySessionStore(SessionStore):
    """Sessions in this process's memory (see the module docstring).

    *idle_timeout* and *pending_timeout* are seconds of *clock* (monotonic;
    tests pass a fake one to expire sessions without sleeping).
    """

    def __init__(
        self,
        *,
        idle_timeout: float,
        pending_timeout: float,
        clock: Clock = time.monotonic,
        on_end: EndListener | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.pending_timeout = pending_timeout
        self._clock = clock
        self._on_end = on_end
        self._lock = threading.Lock()
        self._records: dict[str, SessionRecord] = {}
        self._per_token: Counter[str] = Counter()
        self._per_client: Counter[str] = Counter()
        self._refusing = False

    def __repr__(self) -> str:
        return f"<MemorySessionStore sessions={len(self._records)}>"

    def set_end_listener(self, on_end: EndListener | None) -> None:
        """Report every session removed from now on to *on_end(record, reason)*."""
        self._on_end = on_end

    # -- under the lock ------------------------------------------------------------

    def _add(self, record: SessionRecord) -> None:
        self._records[record.id] = record
        self._per_token[record.fingerprint] += 1
        if record.client is not None:
            self._per_client[record.client] += 1

    def _remove(self, session_id: str) -> SessionRecord | None:
        record = self._records.pop(session_id, None)
        if record is not None:
            _decrement(self._per_token, record.fingerprint)
            if record.client is not None:
                _decrement(self._per_client, record.client)
        return record

    def _stale(self, record: SessionRecord, now: float) -> bool:
        limit = self.pending_timeout if record.pending else self.idle_timeout
        return now - record.last_activity > limit

    # -- outside it -------------------------------------------------------------------

    def _ended(self, records: list[SessionRecord], reason: str) -> None:
        listener = self._on_end
        if listener is not None:
            for record in records:
                listener(record, reason)

    def open(self, record: SessionRecord, caps: Caps) -> Refusal | None:
        """Add *record* (pending) unless a cap would be passed."""
        with self._lock:
            if self._refusing:
                return Refusal.CLOSED
            if len(self._records) >= caps.total:
                return Refusal.FULL
            if self._per_token[record.fingerprint] >= caps.per_token:
                return Refusal.TOKEN
            if record.client is not None and self._per_client[record.client] >= caps.per_client:
                return Refusal.CLIENT
            self._add(dataclasses.replace(record, pending=True, last_activity=self._clock()))
        return None

    def activate(self, session_id: str, guild_ids: tuple[str, ...]) -> SessionRecord | None:
        """Mark a pending session logged in; None if it was closed meanwhile."""
        with self._lock:
            record = self._records.get(session_id)
            if record is None:
                return None
            record = dataclasses.replace(
                record, guild_ids=guild_ids, pending=False, last_activity=self._clock()
            )
            self._records[session_id] = record
            return record

    def get(self, session_id: str) -> SessionRecord | None:
        """The live, logged-in session, its idle timer restarted."""
        with self._lock:
            record = self._records.get(session_id)
            if record is None or record.pending:
                return None
            now = self._clock()
            if not self._stale(record, now):
                record = dataclasses.replace(record, last_activity=now)
                self._records[session_id] = record
                return record
            self._remove(session_id)
        self._ended([record], "expired")
        return None

    def close(self, session_id: str, reason: str = "logout") -> SessionRecord | None:
        """Remove a session; the removed record, or None."""
        with self._lock:
            record = self._remove(session_id)
        if record is not None:
            self._ended([record], reason)
        return record

    def close_for(self, fingerprint: str, reason: str) -> list[SessionRecord]:
        """Remove every session of one bot."""
        with self._lock:
            if not self._per_token.get(fingerprint):
                return []
            ids = [
                r.id
                for r in self._records.values()
                if r.fingerprint == fingerprint and not r.pending
            ]
            removed = [r for r in map(self._remove, ids) if r is not None]
        self._ended(removed, reason)
        return removed

    def expire(self) -> list[SessionRecord]:
        """Remove and return every stale session."""
        with self._lock:
            now = self._clock()
            ids = [r.id for r in self._records.values() if self._stale(r, now)]
            removed = [r for r in map(self._remove, ids) if r is not None]
        self._ended(removed, "expired")
        return removed

    def shutdown(self) -> list[SessionRecord]:
        """Refuse new sessions and remove every one: they live in this process only."""
        with self._lock:
            self._refusing = True
            removed = list(self._records.values())
            self._records.clear()
            self._per_token.clear()
            self._per_client.clear()
        self._ended(removed, "shutdown")
        return removed

    def refuse_new(self) -> None:
        """Refuse new sessions from now on."""
        with self._lock:
            self._refusing = True

    def count(self) -> int:
        """Sessions open now."""
        with self._lock:
            return len(self._records)

    def count_for(self, fingerprint: str) -> int:
        """Sessions of one bot open now."""
        with self._lock:
            return self._per_token.get(fingerprint, 0)

    def fingerprints(self) -> set[str]:
        """The bots that have sessions now."""
        with self._lock:
            return set(self._per_token)


def _decrement(counter: Counter[str], key: str) -> None:
    remaining = counter[key] - 1
    if remaining > 0:
        counter[key] = remaining
    else:
        del counter[key]
