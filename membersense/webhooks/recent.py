"""The events a process published lately, per topic, for webhooks it hears of late.

A webhook's events are delivered by the process that publishes its topic, and
that process may hear of a new webhook a moment after it was made: in Redis
mode any process registers it, and the bot's owner learns of it by a notice.
Events published in that moment would never reach the receiver. So the
publishing process keeps each topic's latest events for a short while
(:data:`WINDOW_S`, at most :data:`PER_TOPIC` of a topic), and a webhook's
deliveries begin with those published since it was made
(:meth:`RecentEvents.since`).

The events are the bus's own objects (in memory mode the bus keeps them
anyway); a topic with nothing new for the window is dropped.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from membersense.bus import Event

__all__ = ["PER_TOPIC", "WINDOW_S", "RecentEvents"]

#: How long a published event is kept, in seconds (a notice takes milliseconds).
WINDOW_S = 10.0
#: The most events kept of one topic.
PER_TOPIC = 256


class RecentEvents:
    """Each topic's events of the last *window_s* seconds (see the module docstring); safe
    from any thread. *clock* is wall-clock seconds, as event timestamps are."""

    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        per_topic: int = PER_TOPIC,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_s = window_s
        self.per_topic = per_topic
        self._clock = clock
        self._lock = threading.Lock()
        self._topics: dict[str, collections.deque[Event]] = {}
        self._next_sweep = 0.0

    def __repr__(self) -> str:
        return f"<RecentEvents topics={len(self._topics)}>"

    def add(self, event: Event) -> None:
        """Keep *event* (just published) for a while."""
        now = self._clock()
        cutoff_ms = (now - self.window_s) * 1000
        with self._lock:
            kept = self._topics.get(event.topic)
            if kept is None:
                kept = self._topics[event.topic] = collections.deque(maxlen=self.per_topic)
            kept.append(event)
            _drop_older(kept, cutoff_ms)
            if now >= self._next_sweep:  # now and then, topics that went quiet
                self._next_sweep = now + self.window_s
                for topic, events in list(self._topics.items()):
                    _drop_older(events, cutoff_ms)
                    if not events:
                        del self._topics[topic]

    def since(self, topic: str, not_before_ms: int, *, until: str | None = None) -> list[Event]:
        """The kept events of *topic* published at *not_before_ms* or later, oldest first,
        stopping before the one whose id is *until*."""
        with self._lock:
            kept = list(self._topics.get(topic, ()))
        found = []
        for event in kept:
            if event.id == until:
                break
            if event.timestamp >= not_before_ms:
                found.append(event)
        return found

    def forget(self, gone: Callable[[str], bool]) -> None:
        """Drop the topics *gone(topic)* accepts (this process no longer publishes them)."""
        with self._lock:
            for topic in [t for t in self._topics if gone(t)]:
                del self._topics[topic]


def _drop_older(events: collections.deque[Event], cutoff_ms: float) -> None:
    while events and events[0].timestamp < cutoff_ms:
        events.popleft()
