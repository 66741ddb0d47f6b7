"""Webhook subscriptions as records, and the interface every subscription store implements.

A subscription belongs to one session: it names the session's bot view of one
guild (the bus topic), the receiver's URL, the event types it wants and the
secret its deliveries are signed with, and it ends with the session. Besides
that the record keeps how deliveries went: consecutive failed deliveries, the
last error, when the last one succeeded, and whether it was disabled.

Records are immutable values, copied in and out. The interface is what a
shared store (Redis: a hash per subscription, a set per session and per
topic) can do; :class:`~membersense.webhooks.memory.MemorySubscriptionStore`
is the process-local one. Only the deliverer changes the delivery fields
(:meth:`SubscriptionStore.update`); the API adds and removes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

__all__ = ["Subscription", "SubscriptionStore"]


@dataclass(frozen=True, slots=True)
class Subscription:
    """One receiver of one session's events (see the module docstring).

    *created_at* and *last_delivery_at* are wall-clock epoch seconds.
    """

    id: str
    session_id: str
    topic: str
    guild_id: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: float
    disabled: bool = False
    failures: int = 0  # deliveries failed in a row (every try of each spent)
    last_error: str | None = None
    last_delivery_at: float | None = None
    #: The id of the last event delivered (where a new deliverer goes on from).
    cursor: str | None = None

    def __repr__(self) -> str:  # never the secret, never the URL (it may hold a token)
        return f"<Subscription {self.id} topic={self.topic} disabled={self.disabled}>"

    def wants(self, event_type: str) -> bool:
        """Whether an event of this type is delivered to it now."""
        return not self.disabled and event_type in self.events

    def to_json(self) -> dict[str, Any]:
        """The subscription as ``GET /api/webhooks`` lists it (without its secret)."""
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "guildId": self.guild_id,
            "createdAt": int(self.created_at * 1000),
            "active": not self.disabled,
            "failures": self.failures,
            "lastError": self.last_error,
            "lastDeliveryAt": (
                int(self.last_delivery_at * 1000) if self.last_delivery_at is not None else None
            ),
        }


class SubscriptionStore(ABC):
    """Where subscriptions live (see the module docstring)."""

    @abstractmethod
    def add(self, subscription: Subscription, *, limit: int) -> bool:
        """Add *subscription* unless its session already has *limit*; atomically."""

    @abstractmethod
    def get(self, subscription_id: str) -> Subscription | None:
        """The subscription with this id, or None."""

    @abstractmethod
    def delivering(self, subscription_id: str) -> Subscription | None:
        """The subscription as its deliverer sees it, or None when this process does not
        deliver it (any more). Never blocks: the deliverer calls it on the event loop."""

    @abstractmethod
    def of_session(self, session_id: str) -> list[Subscription]:
        """The session's subscriptions, oldest first."""

    @abstractmethod
    def of_topic(self, topic: str) -> list[Subscription]:
        """The subscriptions to a topic (disabled ones included)."""

    @abstractmethod
    def update(self, subscription_id: str, **changes: Any) -> Subscription | None:
        """Change delivery fields of a subscription; the new record, or None if it is gone."""

    @abstractmethod
    def remove(self, subscription_id: str) -> Subscription | None:
        """Remove a subscription; the removed record, or None."""

    @abstractmethod
    def remove_session(self, session_id: str) -> list[Subscription]:
        """Remove every subscription of a session (it ended); the removed records."""
