"""Writes to Redis that must not block the Discord loop: queued, then done in order.

The bot owner's event loop produces events, published state and Discord's
answers for the shared guards; none of that may wait on a socket. A
:class:`Writer` takes each write as a function of a redis-py pipeline, runs
the queued ones in order on a daemon thread of its own (started by the first
write), a batch per pipeline round trip, and logs (by type) what Redis
refused. Writes lost to a Redis outage are lost: the owner gives its bots up
when it cannot renew their leases, and the next owner starts afresh.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import redis

from membersense.cluster.connection import RedisConnection

__all__ = ["Writer"]

log = logging.getLogger("membersense.cluster")

Write = Callable[[Any], None]  # given a pipeline, queue commands on it

#: Most writes sent in one round trip.
BATCH = 200


class Writer:
    """An ordered, non-blocking queue of Redis writes (see the module docstring)."""

    def __init__(self, connection: RedisConnection) -> None:
        self._connection = connection
        self._queue: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return f"<Writer {'closed' if self._closed else 'open'} queued={self._queue.qsize()}>"

    def submit(self, write: Write) -> None:
        """Queue *write*; never blocks. Ignored once closed."""
        if self._closed:
            return
        self._idle.clear()
        self._queue.put(write)
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(
                        target=self._run, name="membersense-writer", daemon=True
                    )
                    self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is written; whether it was in time."""
        if self._thread is None:
            return True
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._idle.set()
                return
            batch = [first]
            while len(batch) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._write(batch)
            if self._queue.empty():
                self._idle.set()

    def _write(self, batch: list[Write]) -> None:
        pipeline = self._connection.client.pipeline(transaction=False)
        try:
            for write in batch:
                write(pipeline)
            results = pipeline.execute(raise_on_error=False)
        except (redis.RedisError, OSError) as exc:
            self._connection.failed(exc)
            return
        for result in results:
            if isinstance(result, Exception):
                log.warning("a Redis write failed: %s", type(result).__name__)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by *timeout*), then stop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
