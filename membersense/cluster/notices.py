"""Cluster notices over Redis pub/sub: what one process tells all the others at once.

A notice is ``"<kind> <argument>"`` on the ``notices`` channel: a session ended
(every process drops its cached copy, so a logout anywhere ends the session
everywhere within milliseconds), a bot's lease was released (whoever has
sessions of that bot may take it over at once instead of at its next try).

:class:`Notices` listens on a daemon thread of its own, started by the first
:meth:`~Notices.start` (the first use of the session store, in the serving
process: never at import), reconnecting after Redis trouble. While it is not
listening, :attr:`Notices.listening` is false, and anything that trusts
notices (the session cache) must not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from membersense.cluster.connection import RedisConnection

__all__ = ["Notices"]

log = logging.getLogger("membersense.cluster")

Handler = Callable[[str], None]

#: How long to wait before listening again after Redis trouble.
RECONNECT_S = 0.5
#: How often the listener looks up from the socket (to notice it should stop).
_POLL_S = 0.2


class Notices:
    """Publishes notices and calls handlers for the ones other processes send."""

    def __init__(self, connection: RedisConnection) -> None:
        self._connection = connection
        self._channel = connection.keys.notices
        self._handlers: dict[str, list[Handler]] = {}
        self._on_gap: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._pubsub: redis.client.PubSub | None = None

    def __repr__(self) -> str:
        return f"<Notices {'listening' if self.listening else 'deaf'}>"

    @property
    def listening(self) -> bool:
        """True while notices reach this process."""
        return self._listening.is_set()

    def on(self, kind: str, handler: Handler) -> None:
        """Call *handler(argument)* for every notice of *kind* (once listening)."""
        with self._lock:
            self._handlers.setdefault(kind, []).append(handler)

    def on_gap(self, handler: Callable[[], None]) -> None:
        """Call *handler()* whenever notices may have been missed (listening stopped)."""
        with self._lock:
            self._on_gap.append(handler)

    def send(self, kind: str, argument: str) -> None:
        """Tell every process (this one included). Redis trouble raises StoreUnavailable."""
        self._connection.call(
            lambda: self._connection.client.publish(self._channel, f"{kind} {argument}")
        )

    def wait_listening(self, timeout: float) -> bool:
        """Start listening and wait until notices reach this process."""
        self.start()
        return self._listening.wait(timeout)

    def start(self) -> None:
        """Start listening (once; cheap to call again)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or self._stopping.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name="membersense-notices", daemon=True
            )
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            pubsub = self._connection.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub = pubsub
            try:
                pubsub.subscribe(self._channel)
                self._listening.set()
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=_POLL_S)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["data"])
            except (redis.RedisError, OSError, ValueError) as exc:
                if not self._stopping.is_set():
                    self._connection.failed(exc)
            finally:
                self._gap()
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
            self._stopping.wait(RECONNECT_S)

    def _gap(self) -> None:
        if self._listening.is_set():
            self._listening.clear()
            for handler in list(self._on_gap):
                handler()

    def _dispatch(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        kind, _, argument = text.partition(" ")
        for handler in self._handlers.get(kind, ()):
            try:
                handler(argument)
            except Exception as exc:  # one handler's bug must not stop the listener
                log.error(
                    "notice handler failed: %s",
                    type(exc).__name__,
                    extra={"fields": {"notice": kind}},
                )

    def close(self) -> None:
        """Stop listening and join the thread. Idempotent."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._gap()
