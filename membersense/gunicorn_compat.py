"""Every use of gunicorn's internals, in one place (gunicorn >= 27, < 28).

MemberSense serves with a worker of its own (:mod:`membersense.worker`) that
reads each request in full, without blocking, before a thread sees it. What
that takes from gunicorn beyond its documented settings is here:

- :class:`BufferedThreadWorker` changes gthread's ``ThreadWorker`` so that a
  pool thread never waits for a client: it serves a request only once it has
  been read whole (a first non-blocking read may happen on the thread, the
  rest of a slow request is read in the poller). It takes over ``accept``,
  ``handle`` (read without blocking, then parse the buffered bytes and serve them),
  ``finish_request`` (what happens to the connection after a response),
  ``murder_pending`` and ``wait_for_and_dispatch_events`` (time-outs), and
  ``handle_error`` (JSON with fixed messages instead of gunicorn's HTML pages,
  which echo client text). Deciding *when* a request is in, and every limit,
  is the subclass's business, through the hooks named below.
- :data:`MALFORMED_BODY_ERRORS`: what reading a bad chunked body raises.
- The ``Server`` header, pinned to a name without a version.

:data:`INTERNALS` lists every internal name relied on; ``tests/test_gunicorn_compat.py``
fails when one disappears, and setup.cfg bounds gunicorn below 28 so an
upgrade is a decision, made with these tests.
"""

from __future__ import annotations

import errno
import selectors
import socket
import ssl
import struct
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from functools import partial
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.http import errors as http_errors
from gunicorn.http import message as http_message
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import TConn, ThreadWorker

from membersense.raw_responses import error_response

__all__ = [
    "INSTANCE_ATTRIBUTES",
    "INTERNALS",
    "MALFORMED_BODY_ERRORS",
    "SERVER_HEADER",
    "BufferedConnection",
    "BufferedThreadWorker",
]

#: What reading a request body can raise when its chunked framing is bad or
#: cut short (gunicorn raises these from ``wsgi.input``'s read methods).
MALFORMED_BODY_ERRORS: tuple[type[Exception], ...] = (
    http_errors.InvalidChunkSize,
    http_errors.ChunkMissingTerminator,
    http_errors.InvalidChunkExtension,
    http_errors.NoMoreData,
    http_errors.InvalidHeader,  # a bad trailer field
    http_errors.InvalidHeaderName,
    http_errors.LimitRequestHeaders,  # a trailer section too large
)

#: ``Server`` on every response gunicorn writes: the product, never its version.
SERVER_HEADER = "gunicorn"

#: What handle() returns when a request is not whole yet: back to the poller.
_READ_MORE = object()

#: Longest a pool thread waits in one send() to a client that does not read its response.
SEND_TIMEOUT_S = 30

#: (owner, attribute) pairs of gunicorn's internals this module relies on.
INTERNALS: tuple[tuple[Any, str], ...] = (
    (gunicorn_wsgi, "SERVER"),  # read by Response.__init__ for the Server header
    (gunicorn_wsgi.Response, "force_close"),
    (gunicorn_wsgi.Response, "start_response"),
    (ThreadWorker, "accept"),  # poller callback for a readable listener
    (ThreadWorker, "enqueue_req"),  # hands a connection to the pool; result to finish_request
    (ThreadWorker, "finish_request"),  # (conn, future) on the main thread
    (ThreadWorker, "handle"),  # (conn) on a pool thread; returns keep-alive
    (ThreadWorker, "handle_request"),  # (req, conn): runs the app, writes the response
    (ThreadWorker, "handle_error"),  # (req, sock, addr, exc)
    (ThreadWorker, "murder_pending"),  # called on every turn of run()'s loops
    (ThreadWorker, "wait_for_and_dispatch_events"),  # (timeout)
    (ThreadWorker, "load_wsgi"),
    (ThreadWorker, "check_config"),
    (RequestParser, "finish_body"),
    (http_errors, "NoMoreData"),
)

#: Attributes gunicorn sets on instances (so only its source shows them) that this
#: module reads or writes: (class, name) as in ``self.<name> = ...`` in that class.
INSTANCE_ATTRIBUTES: tuple[tuple[type, str], ...] = (
    (ThreadWorker, "poller"),  # the selector run() waits on
    (ThreadWorker, "nr_conns"),  # open connections, against worker_connections
    (ThreadWorker, "keepalived_conns"),  # read by handle_request; stays empty here
    (TConn, "sock"),
    (TConn, "client"),
    (TConn, "server"),
    (TConn, "parser"),
    (http_message.Message, "_expected_100_continue"),  # wsgi.create sends the 100 if set
)


class BufferedConnection(TConn):
    """A client connection, with what the buffering worker keeps for it.

    Its socket stays in blocking mode for good: a pool thread writes the
    response with plain blocking sends (bounded by ``SO_SNDTIMEO``), and every
    read passes ``MSG_DONTWAIT`` instead, so that it never blocks. gthread
    switches the mode back and forth twice a request: two more system calls,
    each a handover of the GIL.
    """

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)  # which makes it non-blocking
        sock.setblocking(True)
        # Bound each blocking send of a response, so a client that stops reading
        # frees the thread. In the kernel (SO_SNDTIMEO) and not as a Python socket
        # time-out, which would poll() before every send and recv: one more
        # system call, and handover of the GIL, each.
        try:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT_S, 0)
            )
        except OSError:
            pass
        #: The next request, read in full, when it goes to a thread.
        self.request = b""
        #: Bytes read past that request (the client pipelined its next one).
        self.leftover = b""
        #: Serve the request, then close (its framing could not be followed).
        self.must_close = False
        #: A "100 Continue" was already sent for this request.
        self.continue_sent = False
        self.closed = False
        self._watched = False
        #: Anything the subclass keeps per connection.
        self.state: Any = None


class BufferedThreadWorker(ThreadWorker):
    """gthread whose pool threads never wait for a client.

    Subclasses implement the hooks :meth:`connection_opened`,
    :meth:`read_in_thread`, :meth:`request_incomplete`, :meth:`request_finished`,
    :meth:`connection_closed`, :meth:`sweep` and :meth:`next_sweep_in`, and use
    :meth:`watch`, :meth:`unwatch`, :meth:`serve` and :meth:`close`. Pool
    threads never wait on a socket: they read only what is there, and
    gunicorn's parser gets the buffered bytes.
    """

    #: The application (set by gunicorn's ``load_wsgi``).
    wsgi: Callable[..., Iterable[bytes]]

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """Refuse what this worker does not serve: TLS, the PROXY protocol, HTTP/2."""
        super().check_config(cfg, log)
        if cfg.is_ssl:
            raise SystemExit("MemberSense serves plain HTTP/1.1; terminate TLS in front of it")
        if str(cfg.proxy_protocol).lower() not in ("off", "false", "none"):
            raise SystemExit("MemberSense's worker does not read the PROXY protocol")
        if "h2" in str(cfg.http_protocols):
            raise SystemExit("MemberSense's worker serves HTTP/1.1 only")

    def init_process(self) -> None:
        gunicorn_wsgi.SERVER = SERVER_HEADER
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = _honour_connection_close(self.wsgi)

    # -- hooks for subclasses ---------------------------------------------------

    def connection_opened(self, conn: BufferedConnection) -> None:
        """A client connected (main thread): watch it or close it."""
        raise NotImplementedError

    def read_in_thread(self, conn: BufferedConnection) -> bool:
        """Read what *conn* has, without blocking (pool thread); whether a request is whole.

        When it is, ``conn.request`` (and ``leftover``, ``must_close``) are set
        and the thread serves it; otherwise :meth:`request_incomplete` follows
        on the main thread.
        """
        raise NotImplementedError

    def request_incomplete(self, conn: BufferedConnection) -> None:
        """:meth:`read_in_thread` did not complete a request (main thread)."""
        raise NotImplementedError

    def request_finished(self, conn: BufferedConnection, keep_alive: bool) -> None:
        """A thread answered ``conn.request`` (main thread): read the next one or close."""
        raise NotImplementedError

    def connection_closed(self, conn: BufferedConnection) -> None:
        """``conn`` was closed (main thread)."""

    def sweep(self, now: float) -> None:
        """Called on every turn of the main loop: end connections past their deadline."""

    def next_sweep_in(self) -> float:
        """At most how long the main loop may wait for events before :meth:`sweep`."""
        return 1.0

    # -- tools for subclasses ---------------------------------------------------

    def watch(
        self, conn: BufferedConnection, on_readable: Callable[[BufferedConnection], None]
    ) -> None:
        """Call *on_readable(conn)* on the main thread whenever its socket is readable.

        Watching an already watched connection changes nothing.
        """
        if conn._watched:
            return
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self._readable, conn, on_readable)
        )
        conn._watched = True

    def unwatch(self, conn: BufferedConnection) -> None:
        """Stop watching *conn*'s socket (no-op if it is not watched)."""
        if conn._watched:
            conn._watched = False
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass

    def serve(self, conn: BufferedConnection) -> None:
        """Hand *conn* to a pool thread: it serves ``conn.request``, or first reads one
        (:meth:`read_in_thread`) when that is empty. :meth:`request_finished` or
        :meth:`request_incomplete` follows."""
        self.unwatch(conn)
        self.enqueue_req(conn)

    def close(self, conn: BufferedConnection) -> None:
        """Close *conn* now (idempotent)."""
        if conn.closed:
            return
        conn.closed = True
        self.unwatch(conn)
        self.nr_conns -= 1
        gunicorn_util.close(conn.sock)
        self.connection_closed(conn)

    # -- gthread, changed -------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = BufferedConnection(self.cfg, sock, addr, listener.getsockname())
        self._guarded(self.connection_opened, conn)

    def _readable(
        self,
        conn: BufferedConnection,
        on_readable: Callable[[BufferedConnection], None],
        _fileobj: Any,
    ) -> None:
        self._guarded(on_readable, conn)

    def _guarded(
        self, callback: Callable[[BufferedConnection], None], conn: BufferedConnection
    ) -> None:
        # An exception escaping a poller callback would end the worker process.
        try:
            callback(conn)
        except Exception as exc:  # one connection's bug must not end the worker
            self.log.error(
                "closing a connection after %s in %s",
                type(exc).__name__,
                getattr(callback, "__name__", "a callback"),
            )
            self.close(conn)

    def finish_request(self, conn: BufferedConnection, fs: Future[Any]) -> None:
        try:
            result = (not fs.cancelled()) and fs.result()
        except Exception:  # handle() failed: the connection just closes
            result = False
        if conn.closed:
            return
        if result is _READ_MORE:
            self._guarded(self.request_incomplete, conn)
            return
        self._guarded(partial(self.request_finished, keep_alive=bool(result)), conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        self.sweep(time.monotonic())

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        super().wait_for_and_dispatch_events(min(timeout, self.next_sweep_in()))

    def handle(self, conn: BufferedConnection) -> Any:
        """Serve ``conn.request`` on a pool thread; whether the connection may be kept.

        With no request read yet, read one first, without blocking: a request
        that is not whole goes back to the poller (``_READ_MORE``).
        """
        req = None
        try:
            if not conn.request and not self.read_in_thread(conn):
                return _READ_MORE
            # An iterable source: the parser reads the buffered bytes and never the socket.
            conn.parser = RequestParser(self.cfg, [conn.request], conn.client)
            req = next(conn.parser)
            if conn.continue_sent:
                req._expected_100_continue = False  # the main thread already sent it
            if conn.must_close:
                req.force_close()
            if not self.handle_request(req, conn):
                return False
            try:
                # A body the app left unread is in memory; a bad one ends the connection.
                return bool(conn.parser.finish_body())
            except Exception:  # any parse error there means: close
                return False
        except (StopIteration, http_errors.NoMoreData):
            return False
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):  # SO_SNDTIMEO ran out
                self.log.debug("client did not read its response in time")
            elif exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.warning(
                    "socket error %s while serving a request",
                    errno.errorcode.get(exc.errno or 0, type(exc).__name__),
                )
            return False
        except Exception as exc:  # gunicorn's contract: answer it with handle_error
            self.handle_error(req, conn.sock, conn.client, exc)
            return False

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """Answer a request gunicorn could not serve with a JSON error and a fixed message.

        gunicorn's own pages are HTML and quote what the client sent; its
        log line does too. Both carry only fixed text here.
        """
        status, message = _status_of(exc)
        ip = addr[0] if isinstance(addr, tuple) else "unix"
        if status == 500:  # a bug, not the client's doing
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f"{frame.filename}:{frame.lineno} in {frame.name}" if frame else "unknown"
            self.log.error(
                "error serving a request from %s: %s at %s", ip, type(exc).__name__, where
            )
        else:
            self.log.warning("invalid request from %s: %s (%d)", ip, message, status)
        try:
            client.sendall(error_response(status, message))
        except Exception:  # the client may be gone; nothing more to do
            self.log.debug("could not send the error response")


def _status_of(exc: BaseException) -> tuple[int, str]:
    """The status and fixed message of an exception gunicorn raised while serving."""
    if isinstance(
        exc,
        (
            http_errors.InvalidResponseHeader,
            http_errors.InvalidResponseHeaderName,
            http_errors.ConfigurationProblem,
        ),
    ):
        return 500, "Internal Server Error"  # the app's fault, not the client's
    if isinstance(exc, http_errors.InvalidHeader) and getattr(exc, "hdr", None) in (
        "CONTENT-LENGTH",
        "TRANSFER-ENCODING",
    ):
        return 400, "Invalid Content-Length or Transfer-Encoding"
    for kinds, status, message in _CLIENT_ERRORS:
        if isinstance(exc, kinds):
            return status, message
    return 500, "Internal Server Error"


_CLIENT_ERRORS: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], int, str], ...
] = (
    (http_errors.LimitRequestLine, 414, "Request line too long"),
    (http_errors.LimitRequestHeaders, 431, "Request header fields too large"),
    (http_errors.UnsupportedTransferCoding, 501, "Unsupported transfer coding"),
    (http_errors.ExpectationFailed, 417, "Expectation failed"),
    (
        (
            http_errors.InvalidChunkSize,
            http_errors.ChunkMissingTerminator,
            http_errors.InvalidChunkExtension,
        ),
        400,
        "Malformed chunked body",
    ),
    (http_errors.InvalidRequestLine, 400, "Invalid request line"),
    (http_errors.InvalidRequestMethod, 400, "Invalid request method"),
    (http_errors.InvalidHTTPVersion, 400, "Invalid HTTP version"),
    (
        (
            http_errors.InvalidHeader,
            http_errors.InvalidHeaderName,
            http_errors.ObsoleteFolding,
            http_errors.InvalidSchemeHeaders,
        ),
        400,
        "Invalid header",
    ),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden"),
    (
        (
            http_errors.InvalidProxyLine,
            http_errors.InvalidProxyHeader,
            http_errors.InvalidH2CPreface,
            ssl.SSLError,
        ),
        400,
        "Bad Request",
    ),
)


def _honour_connection_close(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Let the app close the connection after an error by sending ``Connection: close``.

    gunicorn drops hop-by-hop headers a WSGI app sends and decides keep-alive
    itself; after a body it could not read (a malformed chunk), the app must
    be able to say the connection ends. ``start_response`` is a method of
    gunicorn's ``Response``, whose ``force_close`` does that. Only error
    answers are looked at, so a 200 pays for one string comparison.
    """

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status[0] in "45":
                for name, value in headers:
                    if name.lower() == "connection" and value.lower() == "close":
                        # gunicorn's start_response is a bound method of its Response.
                        start_response.__self__.force_close()  # type: ignore[attr-defined]
            return start_response(status, headers, exc_info)

        return app(environ, start)

    wsgi.__wrapped__ = app  # type: ignore[attr-defined]  # the app, for hooks that look for it
    return wsgi
