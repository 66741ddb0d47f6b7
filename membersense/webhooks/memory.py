"""The subscription store of one process: dicts behind one lock, indexed by session and topic."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from membersense.webhooks.store import Subscription, SubscriptionStore

__all__ = ["MemorySubscriptionStore"]

#: The fields :meth:`MemorySubscriptionStore.update` may change.
_DELIVERY_FIELDS = frozenset({"disabled", "failures", "last_error", "last_delivery_at", "cursor"})


class MemorySubscriptionStore(SubscriptionStore):
    """Subscriptions in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, Subscription] = {}
        self._by_session: dict[str, dict[str, None]] = {}  # ordered sets of ids
        self._by_topic: dict[str, dict[str, None]] = {}

    def __repr__(self) -> str:
        return f"<MemorySubscriptionStore subscriptions={len(self._records)}>"

    def __len__(self) -> int:
        return len(self._records)

    def add(self, subscription: Subscription, *, limit: int) -> bool:
        """Add it unless its session has *limit* already."""
        with self._lock:
            mine = self._by_session.setdefault(subscription.session_id, {})
            if len(mine) >= limit:
                return False
            self._records[subscription.id] = subscription
            mine[subscription.id] = None
            self._by_topic.setdefault(subscription.topic, {})[subscription.id] = None
        return True

    def get(self, subscription_id: str) -> Subscription | None:
        """The subscription with this id, or None."""
        return self._records.get(subscription_id)

    def delivering(self, subscription_id: str) -> Subscription | None:
        """The subscription with this id, or None (this process delivers every one)."""
        return self._records.get(subscription_id)

    def of_session(self, session_id: str) -> list[Subscription]:
        """The session's subscriptions, oldest first."""
        with self._lock:
            return [self._records[i] for i in self._by_session.get(session_id, ())]

    def of_topic(self, topic: str) -> list[Subscription]:
        """The subscriptions to a topic."""
        with self._lock:
            return [self._records[i] for i in self._by_topic.get(topic, ())]

    def update(self, subscription_id: str, **changes: Any) -> Subscription | None:
        """Change delivery fields; the new record, or None if it is gone."""
        if not _DELIVERY_FIELDS.issuperset(changes):
            raise ValueError(f"not delivery fields: {sorted(set(changes) - _DELIVERY_FIELDS)}")
        with self._lock:
            record = self._records.get(subscription_id)
            if record is None:
                return None
            record = self._records[subscription_id] = dataclasses.replace(record, **changes)
            return record

    def _remove(self, subscription_id: str) -> Subscription | None:
        # Under the lock.
        record = self._records.pop(subscription_id, None)
        if record is not None:
            for index, key in (
                (self._by_session, record.session_id),
                (self._by_topic, record.topic),
            ):
                ids = index.get(key)
                if ids is not None:
                    ids.pop(subscription_id, None)
                    if not ids:
                        del index[key]
        return record

    def remove(self, subscription_id: str) -> Subscription | None:
        """Remove a subscription."""
        with self._lock:
            return self._remove(subscription_id)

    def remove_session(self, session_id: str) -> list[Subscription]:
        """Remove every subscription of a session."""
        with self._lock:
            ids = list(self._by_session.get(session_id, ()))
            return [r for r in map(self._remove, ids) if r is not None]
