"""The event bus of Redis mode: one Redis Stream per topic.

Only the process that owns a bot's gateway connection publishes its topics
(the lease in :mod:`membersense.cluster.leases` sees to that), so it numbers
the events itself, 1, 2, 3…, using the number as the stream id (``"<n>-0"``),
and writes through the :class:`~membersense.cluster.writer.Writer`, off the
event loop; every process reads with ``XREAD``, waiting in Redis. Streams are
trimmed to about ``EVENT_BUFFER_SIZE`` entries (``XADD … MAXLEN ~``) and
expire, with their message contents, ``SESSION_TIMEOUT`` after the last event.

Ids are ``"<epoch>.<n>"``. The epoch lives beside the stream and changes when
the owner restarts the topic (a new gateway session, a new owner): an id of
another epoch reads as a reset, and so does one whose successor was trimmed
away (the numbers have no gaps, so the first entry left tells). The numbers
go on across epochs and owners (a new owner adopts the bot's streams before
it connects: :meth:`~RedisEventBus.adopt`), so a webhook's last delivered
event still says where to go on from after a failover
(:meth:`~RedisEventBus.since`).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from membersense.bus import Batch, Event, EventBus
from membersense.cluster.connection import RedisConnection
from membersense.cluster.writer import Writer

__all__ = ["RedisEventBus"]

#: The longest a read may wait in Redis (long-polls wait up to 25 s).
LONGEST_WAIT_S = 30.0


def _number(text: str) -> int | None:
    """The event number of a stream id (``"<n>-0"``) or of the part of ours after the epoch."""
    number = text.partition("-")[0]
    return int(number) if number.isdigit() and len(number) <= 18 else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisEventBus(EventBus):
    """Topics as Redis Streams (see the module docstring).

    *capacity* is how many events a topic keeps (about); *retention_s* how long
    a topic lives after its last event.
    """

    def __init__(
        self, connection: RedisConnection, writer: Writer, *, capacity: int, retention_s: float
    ) -> None:
        super().__init__()
        self._redis = connection
        self._keys = connection.keys
        self._writer = writer
        self.capacity = capacity
        self._retention_ms = max(1000, int(retention_s * 1000))
        self._blocking = connection.blocking_client(LONGEST_WAIT_S)
        self._lock = threading.Lock()
        self._heads: dict[str, tuple[str, int]] = {}  # topic -> epoch, last number (owner side)
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisEventBus topics={len(self._heads)}>"

    # -- the owner's side ----------------------------------------------------------------

    def _start(self, topic: str) -> tuple[str, int]:
        # Under the lock. A new epoch; the numbers go on where they were.
        head = (secrets.token_hex(4), self._heads.get(topic, ("", 0))[1])
        self._heads[topic] = head
        epoch_key, ttl = self._keys.stream_epoch(topic), self._retention_ms
        self._writer.submit(lambda pipeline: pipeline.set(epoch_key, head[0], px=ttl))
        return head

    def adopt(self, bot: str) -> None:
        """Go on numbering the bot's topics where their streams are (a new owner, before it
        publishes anything). Blocks on Redis: not for the loop."""
        pattern = self._keys.stream(f"{bot}/*")

        def read() -> list[tuple[str, Any]]:
            client = self._redis.client
            found = []
            for raw in client.scan_iter(match=pattern, count=1000):
                key = _text(raw)
                if key.endswith(":epoch"):
                    continue
                found.append((key, client.xinfo_stream(key)))
            return found

        streams = self._redis.call(read)
        prefix = self._keys.stream("")
        with self._lock:
            for key, info in streams:
                last = _number(_text(info.get("last-generated-id") or "0-0")) or 0
                topic = key[len(prefix) :]
                epoch, known = self._heads.get(topic, (secrets.token_hex(4), 0))
                self._heads[topic] = (epoch, max(known, last))

    def since(self, topic: str, event_id: str | None, not_before_ms: int = 0) -> list[Event] | None:
        """The events of *topic* after *event_id*, whatever their epoch; None when some of
        them were trimmed away. Without an id: the events kept that were published at
        *not_before_ms* or later. Blocks on Redis: not for the loop."""
        number = _number(event_id.partition(".")[2]) if event_id is not None else 0
        if number is None:
            return None
        stream = self._keys.stream(topic)

        def read() -> Any:
            return self._redis.client.xrange(
                stream, min=f"{number}-0", max="+", count=self.capacity + 1
            )

        events = [
            self._event(topic, "", raw_id, fields) for raw_id, fields in self._redis.call(read)
        ]
        if event_id is None:
            return [e for e in events if e.timestamp >= not_before_ms]
        if events and _number(events[0].id.partition(".")[2]) not in (number, number + 1):
            return None  # what came right after event_id was trimmed
        return [e for e in events if _number(e.id.partition(".")[2]) != number]

    def _event(self, topic: str, epoch: str, raw_id: Any, fields: Any) -> Event:
        values = {_text(k): v for k, v in fields.items()}
        number = _number(_text(raw_id))
        # Entries keep the id they were published with (their epoch); older ones get ours.
        event_id = _text(values["i"]) if "i" in values else f"{epoch}.{number}"
        return Event(
            event_id,
            _text(values["t"]),
            topic,
            topic.rpartition("/")[2],
            int(_text(values["ts"])),
            json.loads(values["d"]),
        )

    def publish(self, topic: str, type: str, data: Mapping[str, Any]) -> Event:
        """Append an event (assigned its id here, written in order off the loop)."""
        now_ms = int(time.time() * 1000)
        with self._lock:
            epoch, number = self._heads.get(topic) or self._start(topic)
            number += 1
            self._heads[topic] = (epoch, number)
        stream_id = f"{number}-0"
        event = Event(f"{epoch}.{number}", type, topic, topic.rpartition("/")[2], now_ms, data)
        fields = {
            "i": event.id,
            "t": type,
            "ts": now_ms,
            "d": json.dumps(data, separators=(",", ":")),
        }
        stream, epoch_key, ttl, cap = (
            self._keys.stream(topic),
            self._keys.stream_epoch(topic),
            self._retention_ms,
            self.capacity,
        )

        def write(pipeline: Any) -> None:
            pipeline.xadd(stream, fields, id=stream_id, maxlen=cap, approximate=True)
            pipeline.pexpire(stream, ttl)
            pipeline.pexpire(epoch_key, ttl)

        self._writer.submit(write)
        self._notify_subscribers(event)
        return event

    def restart(self, topic: str) -> None:
        """A new epoch for *topic*: earlier ids read as a reset everywhere."""
        with self._lock:
            self._start(topic)

    def drop(self, topic: str) -> None:
        """Delete *topic*'s stream and epoch (its bot disconnected)."""
        with self._lock:
            self._heads.pop(topic, None)
        stream, epoch_key = self._keys.stream(topic), self._keys.stream_epoch(topic)
        self._writer.submit(lambda pipeline: pipeline.delete(stream, epoch_key))

    # -- everyone's side ----------------------------------------------------------------------

    def _state(self, topic: str) -> tuple[str, int, int]:
        """The topic's epoch, its last event's number and its first kept event's number."""
        stream, epoch_key = self._keys.stream(topic), self._keys.stream_epoch(topic)

        def read() -> list[Any]:
            pipeline = self._redis.client.pipeline(transaction=False)
            pipeline.get(epoch_key)
            pipeline.xinfo_stream(stream)
            return list(pipeline.execute(raise_on_error=False))

        epoch_raw, info = self._redis.call(read)
        epoch = _text(epoch_raw) if epoch_raw else "-"
        if isinstance(info, Exception) or not info:  # no stream (yet)
            return epoch, 0, 1
        last = _number(_text(info.get("last-generated-id") or "0-0")) or 0
        first_entry = info.get("first-entry")
        first = _number(_text(first_entry[0])) if first_entry else None
        return epoch, last, first if first is not None else last + 1

    def cursor(self, topic: str) -> str:
        """The id of *topic*'s latest event."""
        epoch, last, _ = self._state(topic)
        return f"{epoch}.{last}"

    def read(
        self, topic: str, after: str | None, *, limit: int = 100, timeout: float = 0.0
    ) -> Batch:
        """Events after *after*, waiting in Redis up to *timeout* for the next one."""
        epoch, last, first = self._state(topic)
        if after is None:
            position = last
        else:
            their_epoch, _, number = after.partition(".")
            parsed = _number(number) if "-" not in number else None
            if their_epoch != epoch or parsed is None or parsed > last or parsed < first - 1:
                return Batch((), True, f"{epoch}.{last}")
            position = parsed
        wait = min(max(0.0, timeout), LONGEST_WAIT_S)
        stream = self._keys.stream(topic)

        def xread() -> Any:
            return self._blocking.xread(
                {stream: f"{position}-0"},
                count=max(1, limit),
                block=int(wait * 1000) if wait > 0 and not self._closed else None,
            )

        answer = self._redis.call(xread)
        events = [
            self._event(topic, epoch, raw_id, fields)
            for _, entries in answer or ()
            for raw_id, fields in entries
        ]
        for index, event in enumerate(events):
            event_epoch = event.id.partition(".")[0]
            if event_epoch != epoch:
                # The topic restarted (a new gateway session, a new owner) while this read
                # waited in Redis: what Discord sent in between is lost, and the reader must
                # hear so. This epoch's own events first (the next read is then a reset);
                # else a reset that goes on with the new epoch's first event.
                if index:
                    events = events[:index]
                    break
                return Batch((), True, f"{event_epoch}.{position}")
        cursor = events[-1].id if events else f"{epoch}.{position}"
        return Batch(tuple(events), False, cursor)

    def close(self) -> None:
        """Reads no longer wait; the blocking connections close."""
        self._closed = True
        self._blocking.close()
