"""Request ids and the access log.

Every response carries ``X-Request-ID``: the client's own when it is sane
(at most 128 letters, digits and ``._:;/+=@-``, which covers UUIDs and trace
ids), else a fresh one: 12 random characters drawn once per process and a
counter, unique across processes and a fraction of a microsecond to make (a
nanoid, which is for secrets such as session ids, cost 8 µs a request). Every request produces one access-log line with
method, path, status, duration, request id and, when authenticated, the first
characters of the session id. Query strings and bodies are never logged, and
a path is cut at ``MAX_LOGGED_PATH`` characters.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import threading
import time

from flask import Flask, Response, g, request

__all__ = ["REQUEST_ID_HEADER", "init_app"]

REQUEST_ID_HEADER = "X-Request-ID"
# No quotes, brackets or backslashes: the id is client text that lands in logs.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:;/+=@-]{1,128}")
MAX_LOGGED_PATH = 256

access_log = logging.getLogger("membersense.access")


class _RequestIds:
    """``<12 random characters of this process><9 hex digits of a counter>``.

    The prefix is drawn again in a forked child (gunicorn forks its workers), so
    two processes never share one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._prefix = ""
        self._counter = itertools.count()

    def next(self) -> str:
        """A new request id."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._prefix = secrets.token_urlsafe(9)
                    self._counter = itertools.count()
                    self._pid = os.getpid()
        # next() on itertools.count is atomic under the GIL.
        return f"{self._prefix}{next(self._counter) % 16**9:09x}"


_request_ids = _RequestIds()


def _begin() -> None:
    state = g._get_current_object()  # once, not per use
    state.started = time.perf_counter()
    # From the environ: request.headers.get raises and catches an exception when, as
    # usual, the header is absent.
    supplied = request.environ.get("HTTP_X_REQUEST_ID", "")
    state.request_id = supplied if _VALID_REQUEST_ID.fullmatch(supplied) else _request_ids.next()


def _finish(response: Response) -> Response:
    state = g._get_current_object()
    request_id = state.get("request_id") or _request_ids.next()
    response.headers.add(REQUEST_ID_HEADER, request_id)
    if not access_log.isEnabledFor(logging.INFO):
        return response
    session = state.get("session")
    started = state.get("started")
    duration_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    # Once, not per use. The proxy's typing hides this werkzeug LocalProxy method.
    req = request._get_current_object()  # type: ignore[attr-defined]
    method, path, status = req.method, req.path, response.status_code
    if len(path) > MAX_LOGGED_PATH:
        path = path[:MAX_LOGGED_PATH] + "...[cut]"
    # Built directly: Logger.info would walk the stack to find the caller,
    # a cost every request pays and no one reads.
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        "%s %s %s",
        (method, path, status),
        None,
        extra={
            "fields": {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(duration_ms, 2),
                "request_id": request_id,
                "session": session.short_id if session is not None else None,
                "remote_addr": req.remote_addr,
            }
        },
    )
    access_log.handle(record)
    return response


def init_app(app: Flask) -> None:
    """Assign request ids before anything else runs and log every response.

    Call it before other extensions register their hooks: ``before_request``
    hooks run in registration order (so even a rate-limited request has an
    id) and ``after_request`` hooks in reverse (so the log sees final headers).
    """
    app.before_request(_begin)
    app.after_request(_finish)
