"""Event streams (Server-Sent Events) and long-polls of the event bus, for sessions.

Both read only :meth:`membersense.bus.EventBus.read`, so they work the same
over the memory bus and a shared one. Each open stream and each waiting
long-poll holds a server thread, so they share one per-process cap
(:class:`LiveEvents`, ``MAX_EVENT_STREAMS``, at most half of ``THREADS``):
past it the next one is refused at once with 503, and the other threads stay
free for health checks and reads.

A stream:

- starts with a comment, so the client gets the response headers at once;
- sends each event as an SSE frame: ``id`` (the bus's id, which a client's
  ``Last-Event-ID`` resumes from), ``event`` (the event type) and ``data``
  (the JSON of the member, message, channel or guild, as the REST endpoints
  show it); when the id to resume from fell out of the bus's buffer, an
  ``event: reset`` frame first, so the client re-reads the state;
- sends a comment every :data:`HEARTBEAT_S` so proxies keep it open, and at
  each heartbeat refreshes its session (an open stream counts as activity)
  and ends if the session is gone;
- ends with ``event: end`` as soon as its session ends (logout, expiry: the
  session manager reports it; readers look every :data:`WAKE_S`), and with a
  ``retry:`` hint after ``EVENT_STREAM_MAX_SECONDS``, so ``EventSource``
  reconnects with ``Last-Event-ID`` and loses nothing.

Nothing here knows Flask: the API's blueprint authenticates, picks the topic
and serves what :meth:`LiveEvents.stream` yields.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import orjson

from membersense.bus import Batch, Event, EventBus
from membersense.discord.errors import ServiceClosed
from membersense.errors import ServiceUnavailable
from membersense.events.tickets import TicketStore
from membersense.sessions import SessionRecord

__all__ = ["HEARTBEAT_S", "WAKE_S", "EventReader", "LiveEvents", "sse_frame"]

log = logging.getLogger("membersense.events")

#: How often an idle stream sends a comment (and refreshes its session), in seconds.
HEARTBEAT_S = 15.0
#: How often a waiting reader looks whether its session ended or the server is stopping.
WAKE_S = 1.0
#: The reconnection delay a stream that reached its time limit suggests, in milliseconds.
RECONNECT_MS = 1000
#: Retry-After of a stream or long-poll refused because the cap is reached.
FULL_RETRY_AFTER_S = 5
#: Events sent per read of the bus.
BATCH = 100


def sse_frame(event: Event) -> bytes:
    """One event as a Server-Sent Events frame."""
    data = orjson.dumps(dict(event.data))
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event.id.encode(), event.type.encode(), data)


def _reset_frame(cursor: str) -> bytes:
    return b"id: %s\nevent: reset\ndata: {}\n\n" % cursor.encode()


#: The last frame of a stream whose session ended (logout, expiry, ended elsewhere).
SESSION_ENDED_FRAME = b'event: end\ndata: {"reason":"session ended"}\n\n'
#: The last frame of a stream this server ends as it stops (the session may go on elsewhere).
SHUTTING_DOWN_FRAME = b'event: end\ndata: {"reason":"server shutting down"}\n\n'


class EventReader:
    """One open stream or waiting long-poll: it holds a place under the cap until closed.

    :attr:`ended` is set when its session ends or the server stops.
    """

    def __init__(self, owner: LiveEvents, session_id: str) -> None:
        self.session_id = session_id
        self.ended = threading.Event()
        self._owner = owner
        self._closed = False

    def __repr__(self) -> str:
        return f"<EventReader session={self.session_id[:6]} ended={self.ended.is_set()}>"

    def close(self) -> None:
        """Give the place back. Idempotent."""
        if not self._closed:
            self._closed = True
            self._owner._release(self)


class LiveEvents:
    """The streams and long-polls of one process over *bus* (see the module docstring).

    *cap* is how many readers may be open at once; *max_stream_s* bounds a
    stream's life. *heartbeat_s* and *wake_s* are there for tests.
    """

    def __init__(
        self,
        bus: EventBus,
        tickets: TicketStore,
        *,
        cap: int,
        max_stream_s: float,
        heartbeat_s: float = HEARTBEAT_S,
        wake_s: float = WAKE_S,
    ) -> None:
        self.bus = bus
        self.tickets = tickets
        self.cap = cap
        self.max_stream_s = max_stream_s
        self.heartbeat_s = heartbeat_s
        self.wake_s = wake_s
        self._lock = threading.Lock()
        self._readers: dict[str, set[EventReader]] = {}
        self._count = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<LiveEvents readers={self._count}/{self.cap}>"

    @property
    def open_readers(self) -> int:
        """Streams and waiting long-polls open now."""
        return self._count

    # -- places under the cap ----------------------------------------------------------

    def open_reader(self, session_id: str) -> EventReader:
        """A place for one stream or waiting long-poll of the session; 503 past the cap."""
        reader = EventReader(self, session_id)
        with self._lock:
            if self._closed:
                raise ServiceClosed()
            if self._count >= self.cap:
                raise ServiceUnavailable(
                    "Too many event streams are open; try again shortly",
                    retry_after=FULL_RETRY_AFTER_S,
                )
            self._count += 1
            self._readers.setdefault(session_id, set()).add(reader)
        return reader

    def _release(self, reader: EventReader) -> None:
        with self._lock:
            self._count -= 1
            readers = self._readers.get(reader.session_id)
            if readers is not None:
                readers.discard(reader)
                if not readers:
                    del self._readers[reader.session_id]

    def session_ended(self, record: SessionRecord, reason: str) -> None:
        """A session ended (the session manager's listener): its readers end, its tickets go."""
        self.tickets.forget_session(record.id)
        with self._lock:
            readers = list(self._readers.get(record.id, ()))
        for reader in readers:
            reader.ended.set()

    def close(self) -> None:
        """End every reader and open no more (shutting down). Idempotent."""
        with self._lock:
            self._closed = True
            readers = [r for group in self._readers.values() for r in group]
        for reader in readers:
            reader.ended.set()

    def _over(self, reader: EventReader) -> bool:
        return reader.ended.is_set() or self._closed

    # -- reading -------------------------------------------------------------------------

    def stream(
        self,
        reader: EventReader,
        topic: str,
        after: str,
        *,
        refresh: Callable[[], SessionRecord | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[bytes]:
        """The SSE body of one stream of *topic*, from the event after the id *after*.

        *refresh()* renews the session at each heartbeat; None ends the stream.
        The caller closes *reader* when the response closes.
        """
        yield b": connected\n\n"
        try:
            yield from self._frames(reader, topic, after, refresh, clock)
        except Exception as exc:  # past the headers no error page can be sent: end it, say why
            log.error(
                "an event stream failed: %s",
                type(exc).__name__,
                extra={"fields": {"session": reader.session_id[:6]}},
            )

    def _frames(
        self,
        reader: EventReader,
        topic: str,
        after: str,
        refresh: Callable[[], SessionRecord | None],
        clock: Callable[[], float],
    ) -> Iterator[bytes]:
        cursor = after
        started = clock()
        deadline, next_beat = started + self.max_stream_s, started + self.heartbeat_s
        while True:
            if self._over(reader):
                yield SHUTTING_DOWN_FRAME if self._closed else SESSION_ENDED_FRAME
                return
            now = clock()
            if now >= deadline:
                yield b"retry: %d\n\n" % RECONNECT_MS
                return
            if now >= next_beat:
                if refresh() is None:
                    yield SESSION_ENDED_FRAME
                    return
                yield b": heartbeat\n\n"
                next_beat = now + self.heartbeat_s
            wait = max(0.0, min(self.wake_s, next_beat - now, deadline - now))
            batch = self.bus.read(topic, cursor, limit=BATCH, timeout=wait)
            frames = [_reset_frame(batch.cursor)] if batch.reset else []
            frames += [sse_frame(event) for event in batch.events]
            cursor = batch.cursor
            if frames:
                yield b"".join(frames)

    def poll(
        self, session_id: str, topic: str, after: str, *, wait: float, limit: int = BATCH
    ) -> Batch:
        """The events of *topic* after *after*, or a reset; waits up to *wait* seconds for
        the first one, holding a place under the cap meanwhile."""
        if wait <= 0:
            return self.bus.read(topic, after, limit=limit)
        reader = self.open_reader(session_id)
        try:
            deadline = time.monotonic() + wait
            cursor = after
            while True:
                remaining = deadline - time.monotonic()
                batch = self.bus.read(
                    topic, cursor, limit=limit, timeout=max(0.0, min(self.wake_s, remaining))
                )
                if batch.events or batch.reset or remaining <= self.wake_s or self._over(reader):
                    return batch
                cursor = batch.cursor
        finally:
            reader.close()
