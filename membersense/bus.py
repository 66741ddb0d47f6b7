"""The event bus: what happened in a bot's guilds, in order, for whoever listens.

Gateway dispatches become MemberSense :class:`Event` objects (see
:mod:`membersense.discord.translate`), published on a *topic*: one bot's view
of one guild (``"<token fingerprint>/<guild id>"``), because what a bot sees
depends on its permissions. Each topic keeps its latest events in a bounded
buffer; readers ask for the events after an id they already have, and may
wait for the next ones.

Ids are opaque strings, increasing within a topic. They carry the topic's
*epoch*, which changes whenever the topic restarts (this process started, the
bot reconnected without resuming, the topic was dropped): an id from another
epoch, or one that has fallen out of the buffer, is answered with
``reset=True``, which tells the reader to re-read the state over REST and go
on from :attr:`Batch.cursor`. Nothing is lost silently.

In-process subscribers (the published-state rebuilds are one) are called
synchronously by :meth:`EventBus.publish`, on the publishing thread (the
Discord loop): they must not block.

This module holds the interface and the memory implementation; a Redis
Streams implementation shares the interface.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EVENT_TYPES", "Batch", "Event", "EventBus", "MemoryEventBus", "topic_of"]

log = logging.getLogger("membersense.bus")

#: Every event type, as clients see them.
EVENT_TYPES = (
    "member.join",
    "member.update",
    "member.leave",
    "message.create",
    "message.update",
    "message.delete",
    "channel.create",
    "channel.update",
    "channel.delete",
    "guild.update",
)

Subscriber = Callable[["Event"], None]


def topic_of(fingerprint: str, guild_id: int | str) -> str:
    """The topic of one bot's events in one guild."""
    return f"{fingerprint}/{guild_id}"


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a guild, as a bot saw it.

    *data* has the shape the REST endpoints use for the same object (a
    member, a message, a channel, the guild summary); delete and leave
    events carry ids only.
    """

    id: str
    type: str
    topic: str
    guild_id: str
    timestamp: int  # milliseconds since the epoch, when MemberSense saw it
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The event as clients get it."""
        return {
            "id": self.id,
            "type": self.type,
            "guildId": self.guild_id,
            "timestamp": self.timestamp,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Batch:
    """What a read returns.

    *events* are the events after the id asked for, oldest first. *reset* is
    true when that id cannot be continued from (another epoch, or fallen out
    of the buffer): the reader should re-read the state. *cursor* is the id to
    read after next time.
    """

    events: tuple[Event, ...]
    reset: bool
    cursor: str


class EventBus(ABC):
    """Topics of ordered events with bounded history (see the module docstring)."""

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._subscribers_lock = threading.Lock()

    @abstractmethod
    def publish(self, topic: str, type: str, data: Mapping[str, Any]) -> Event:
        """Append an event to *topic* and tell subscribers; returns it. Never blocks."""

    @abstractmethod
    def read(
        self, topic: str, after: str | None, *, limit: int = 100, timeout: float = 0.0
    ) -> Batch:
        """Events of *topic* after the id *after* (None: after the latest one).

        Returns at once when there are events or a reset to report; otherwise
        waits up to *timeout* seconds for the next event. At most *limit*
        events are returned; the cursor then points at the last one returned.
        """

    @abstractmethod
    def cursor(self, topic: str) -> str:
        """The id of *topic*'s latest event: reading after it waits for the next one."""

    @abstractmethod
    def restart(self, topic: str) -> None:
        """Start a new epoch: earlier ids of *topic* read as a reset from now on."""

    @abstractmethod
    def drop(self, topic: str) -> None:
        """Forget *topic* (its bot disconnected): its history and waiters go."""

    @abstractmethod
    def close(self) -> None:
        """Wake every waiting reader and refuse to wait from now on. Idempotent."""

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call *subscriber(event)* for every event published here; returns an unsubscribe."""
        with self._subscribers_lock:
            self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            with self._subscribers_lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    def _notify_subscribers(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception as exc:  # one subscriber's bug must not stop the others
                log.error(
                    "event subscriber failed: %s",
                    type(exc).__name__,
                    extra={"fields": {"event": event.type}},
                )


def _new_epoch() -> str:
    return secrets.token_hex(4)


def _split_id(event_id: str) -> tuple[str, int] | None:
    epoch, sep, seq = event_id.rpartition("-")
    if not sep or not seq.isdigit() or len(seq) > 18:
        return None
    return epoch, int(seq)


class _Topic:
    """One topic's buffer. Guarded by the bus's lock."""

    __slots__ = ("epoch", "seq", "events", "changed")

    def __init__(self, capacity: int, lock: threading.Lock) -> None:
        self.epoch = _new_epoch()
        self.seq = 0  # the last event's number; 0: none yet
        self.events: deque[Event] = deque(maxlen=capacity)
        self.changed = threading.Condition(lock)

    def cursor(self) -> str:
        return f"{self.epoch}-{self.seq}"


class MemoryEventBus(EventBus):
    """The bus of one process: a bounded ring buffer per topic.

    Published from the Discord loop, read (and waited on) by request threads:
    one lock guards every buffer, held only to append or copy out.
    *capacity* is how many events each topic keeps.
    """

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        super().__init__()
        self.capacity = capacity
        self._lock = threading.Lock()
        self._topics: dict[str, _Topic] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryEventBus topics={len(self._topics)} capacity={self.capacity}>"

    def _topic(self, topic: str) -> _Topic:
        # Under the lock.
        found = self._topics.get(topic)
        if found is None:
            found = self._topics[topic] = _Topic(self.capacity, self._lock)
        return found

    def publish(self, topic: str, type: str, data: Mapping[str, Any]) -> Event:
        """Append an event to *topic* and tell subscribers; returns it."""
        guild_id = topic.rpartition("/")[2]
        with self._lock:
            buffer = self._topic(topic)
            buffer.seq += 1
            event = Event(
                f"{buffer.epoch}-{buffer.seq}", type, topic, guild_id, int(time.time() * 1000), data
            )
            buffer.events.append(event)
            buffer.changed.notify_all()
        self._notify_subscribers(event)
        return event

    def read(
        self, topic: str, after: str | None, *, limit: int = 100, timeout: float = 0.0
    ) -> Batch:
        """Events of *topic* after *after*; waits up to *timeout* for the next one."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            if after is None:
                after = self._topic(topic).cursor()
            while True:
                buffer = self._topic(topic)  # again: a restart or drop replaces it
                batch = self._collect(buffer, after, limit)
                if batch.events or batch.reset or self._closed:
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return batch
                buffer.changed.wait(remaining)

    @staticmethod
    def _collect(buffer: _Topic, after: str, limit: int) -> Batch:
        parsed = _split_id(after)
        if parsed is None or parsed[0] != buffer.epoch or parsed[1] > buffer.seq:
            return Batch((), True, buffer.cursor())
        seq = parsed[1]
        first = buffer.seq - len(buffer.events) + 1  # the oldest buffered event's number
        if seq < first - 1:  # what came right after *after* has fallen out of the buffer
            return Batch((), True, buffer.cursor())
        start = seq - first + 1
        events = tuple(
            buffer.events[i] for i in range(start, min(len(buffer.events), start + max(1, limit)))
        )
        cursor = events[-1].id if events else after
        return Batch(events, False, cursor)

    def cursor(self, topic: str) -> str:
        """The id of *topic*'s latest event."""
        with self._lock:
            return self._topic(topic).cursor()

    def restart(self, topic: str) -> None:
        """A new epoch for *topic*; readers waiting on it are woken (and get a reset)."""
        with self._lock:
            old = self._topics.pop(topic, None)
            self._topics[topic] = _Topic(self.capacity, self._lock)
            if old is not None:
                old.changed.notify_all()

    def drop(self, topic: str) -> None:
        """Forget *topic*; readers waiting on it are woken (and get a reset)."""
        with self._lock:
            old = self._topics.pop(topic, None)
            if old is not None:
                old.changed.notify_all()

    def close(self) -> None:
        """Wake every waiting reader; reads no longer wait."""
        with self._lock:
            self._closed = True
            for buffer in self._topics.values():
                buffer.changed.notify_all()
