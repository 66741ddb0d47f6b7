"""MemberSense's gunicorn worker: slow or silent clients never hold a thread.

gthread hands a new connection to a pool thread, which then reads the
request with blocking calls: a client that sends nothing (for a few seconds)
or trickles its head or body keeps that thread for as long as it likes, and
``THREADS`` such clients stop every request, health checks included.

:class:`MemberSenseWorker` never lets a thread wait for a client. When a
connection has bytes to read, a pool thread reads what is there, without
blocking; most requests arrive whole in that one read and are served at once,
as with gthread. A request that is not whole goes back to the worker's poller,
which reads the rest as it comes, on the main thread, and hands it to a thread
only once it is complete (see :mod:`membersense.request_reader` for the
framing and the deadlines). Reading every request on the main thread instead
would cost each one a handover of the GIL to a busy thread and back: measured,
a fifth of the health check's throughput.

Past its deadline a client is cut off: with ``408`` if part of a request
came, silently if nothing did. One address may hold ``MAX_CONNECTIONS_PER_IP``
connections at once (further ones get a ``429`` and are closed), so a single
client cannot take all of gunicorn's ``worker_connections`` either; behind a
reverse proxy (``TRUSTED_PROXIES``) every connection comes from the proxy, so
the cap is off and the proxy's own limits apply.

Everything gunicorn-specific is in :mod:`membersense.gunicorn_compat`.
"""

from __future__ import annotations

import socket
import time
from collections import Counter

from membersense.config import load_settings
from membersense.gunicorn_compat import BufferedConnection, BufferedThreadWorker
from membersense.raw_responses import CONTINUE, error_response
from membersense.request_reader import ReadLimits, ReadState, RequestReader

__all__ = ["MemberSenseWorker"]

#: Largest single read from a client socket.
RECV_SIZE = 65536
#: How often deadlines are checked, at most (seconds): cut-offs are this late at worst.
SWEEP_INTERVAL = 0.1
#: After the last response on a connection, how long its unread input is drained
#: before closing (closing with unread input would reset the connection and could
#: destroy the response before the client reads it), and how much of it.
LINGER_S = 2.0
LINGER_BYTES = 65536
#: A stopping worker keeps idle kept-alive connections this long at most.
STOP_LINGER_S = 2.0
#: Connections refused for the per-address cap that may linger at once; past
#: that they close at once (their 429 may then be lost to a reset), so a client
#: opening connections as fast as it can does not fill worker_connections.
MAX_LINGERING_REFUSED = 64


class _Client:
    """What the worker keeps per connection."""

    __slots__ = ("counted", "drained", "hung_up", "ip", "lingering_until", "reader")

    def __init__(self, ip: str, reader: RequestReader, *, counted: bool = True) -> None:
        self.ip = ip
        self.reader = reader
        #: Whether the connection counts against its address's cap (refused ones do not).
        self.counted = counted
        #: Set when the connection is only being drained before it closes.
        self.lingering_until: float | None = None
        self.drained = 0
        #: The client closed its side (seen on a pool thread).
        self.hung_up = False


class MemberSenseWorker(BufferedThreadWorker):
    """gthread that reads every request in full, under deadlines, before a thread serves it."""

    def init_process(self) -> None:
        """Read the limits (after the fork), then run gthread's loop."""
        settings = load_settings()
        self.limits = ReadLimits(
            header_timeout=settings.request_header_timeout_s,
            body_min_rate=float(settings.request_body_min_rate),
            keepalive=float(self.cfg.keepalive),
            max_body=settings.max_content_length,
            # gunicorn's own limits, so its parser is the one that answers 414 or 431.
            max_request_line=self.cfg.limit_request_line or 8190,
            max_chunk_line=self.cfg.limit_request_field_size or 8190,
        )
        # Behind a proxy every connection comes from the proxy's address.
        self.max_per_ip = 0 if settings.trusted_proxies else settings.max_connections_per_ip
        self.per_ip: Counter[str] = Counter()
        #: Connections the main thread owns: reading a request, idle, or lingering.
        self.timed: set[BufferedConnection] = set()
        self._next_sweep = 0.0
        self._stop_deadline: float | None = None
        self._lingering_refused = 0
        super().init_process()

    # -- connections come and go ------------------------------------------------

    def connection_opened(self, conn: BufferedConnection) -> None:
        ip = conn.client[0] if isinstance(conn.client, tuple) else ""
        reader = RequestReader(self.limits, time.monotonic())
        if self.max_per_ip and self.per_ip[ip] >= self.max_per_ip:
            conn.state = _Client(ip, reader, counted=False)
            response = error_response(429, "Too many connections from this address", retry_after=1)
            if self._lingering_refused < MAX_LINGERING_REFUSED:
                self._lingering_refused += 1
                self._refuse(conn, response)
            else:
                _send(conn.sock, response)
                self.close(conn)
            return
        self.per_ip[ip] += 1
        conn.state = _Client(ip, reader)
        self._await_request(conn)

    def connection_closed(self, conn: BufferedConnection) -> None:
        self.timed.discard(conn)
        client: _Client | None = conn.state
        if client is None:  # closed before it was looked at
            return
        if not client.counted:
            if client.lingering_until is not None:
                self._lingering_refused -= 1
            return
        self.per_ip[client.ip] -= 1
        if self.per_ip[client.ip] <= 0:
            del self.per_ip[client.ip]

    def request_finished(self, conn: BufferedConnection, keep_alive: bool) -> None:
        if not keep_alive:
            self._linger(conn)
            return
        now = time.monotonic()
        client: _Client = conn.state
        client.reader = RequestReader(self.limits, now, kept_alive=True, pending=conn.leftover)
        conn.request = conn.leftover = b""
        conn.continue_sent = False
        if not self.alive:
            client.reader.deadline = min(client.reader.deadline, now + STOP_LINGER_S)
        if not self._next_step(conn):
            self._await_request(conn)

    # -- reading requests -------------------------------------------------------

    def _await_request(self, conn: BufferedConnection) -> None:
        self.timed.add(conn)
        self.watch(conn, self._on_readable)

    def _on_readable(self, conn: BufferedConnection) -> None:
        client: _Client = conn.state
        if client.lingering_until is None and client.reader.state is ReadState.IDLE:
            # A request's first bytes: a pool thread reads them, without blocking, and
            # most often serves the whole request at once. Read here, each request
            # would cost the main thread one more handover of the GIL to a busy
            # thread and back (measured: a fifth of the health check's throughput).
            self.timed.discard(conn)
            self.serve(conn)
            return
        try:
            data = conn.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)
            return
        if not data:  # the client went away
            self.close(conn)
            return
        if client.lingering_until is not None:
            client.drained += len(data)
            if client.drained > LINGER_BYTES:
                self.close(conn)
            return
        client.reader.feed(data, time.monotonic())
        self._next_step(conn)

    def read_in_thread(self, conn: BufferedConnection) -> bool:
        client: _Client = conn.state
        try:
            data = conn.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        if not data:
            client.hung_up = True
            return False
        reader = client.reader
        reader.feed(data, time.monotonic())
        if reader.state is not ReadState.READY:
            return False
        conn.request, conn.leftover = reader.take()
        conn.must_close = reader.must_close
        return True

    def request_incomplete(self, conn: BufferedConnection) -> None:
        if conn.state.hung_up:
            self.close(conn)
        elif not self._next_step(conn):
            self._await_request(conn)

    def _next_step(self, conn: BufferedConnection) -> bool:
        """Serve or refuse the request if its reading is over; whether it was."""
        client: _Client = conn.state
        reader = client.reader
        if reader.state is ReadState.READY:
            self.timed.discard(conn)
            conn.request, conn.leftover = reader.take()
            conn.must_close = reader.must_close
            self.serve(conn)
            return True
        if reader.state is ReadState.HEAD_TOO_LARGE:
            self._refuse(conn, error_response(431, "Request header fields too large"))
            return True
        if reader.expects_continue and not conn.continue_sent:
            # The client waits for this before sending its body.
            conn.continue_sent = True
            _send(conn.sock, CONTINUE)
        return False

    # -- deadlines --------------------------------------------------------------

    def next_sweep_in(self) -> float:
        return SWEEP_INTERVAL if self.timed else 1.0

    def sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        if not self.alive and self._stop_deadline is None:
            self._stop_deadline = now + STOP_LINGER_S
        for conn in list(self.timed):
            client: _Client = conn.state
            if client.lingering_until is not None:
                if now >= client.lingering_until:
                    self.close(conn)
            elif client.reader.started:
                if now >= client.reader.deadline:
                    self._refuse(conn, error_response(408, "Request Timeout"))
            elif now >= client.reader.deadline or (
                self._stop_deadline is not None and now >= self._stop_deadline
            ):
                self.close(conn)  # nothing was asked: nothing to answer

    # -- endings ----------------------------------------------------------------

    def _refuse(self, conn: BufferedConnection, response: bytes) -> None:
        """Answer without serving (the app never sees the request), then close."""
        _send(conn.sock, response)
        self._linger(conn)

    def _linger(self, conn: BufferedConnection) -> None:
        """Close after the last response, without losing it to a reset.

        Half-close, then read and drop what the client still sends, for a
        moment, in the poller (gunicorn does the same with blocking reads on
        its main thread, which one client that never closes would stall).
        """
        client: _Client = conn.state
        client.lingering_until = time.monotonic() + LINGER_S
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        self.timed.add(conn)
        self.watch(conn, self._on_readable)


def _send(sock: socket.socket, data: bytes) -> None:
    """Best-effort write of a short answer from the main thread (never blocks)."""
    try:
        sock.send(data, socket.MSG_DONTWAIT)
    except OSError:
        pass
