"""Request ids and the access log.

Every response carries ``X-Request-ID``: the client's own when it is sane
(printable ASCII, at most 128 characters), else a fresh nanoid. Every request
produces one access-log line with method, path, status, duration, request id
and, when authenticated, the first characters of the session id. Query
strings and bodies are never logged.
"""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, g, request
from nanoid import generate

__all__ = ["init_app", "REQUEST_ID_HEADER"]

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")

access_log = logging.getLogger("membersense.access")


def _begin() -> None:
    g.started = time.perf_counter()
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = supplied if _VALID_REQUEST_ID.fullmatch(supplied) else generate()


def _finish(response: Response) -> Response:
    request_id = g.get("request_id") or generate()
    response.headers[REQUEST_ID_HEADER] = request_id
    session = g.get("session")
    started = g.get("started")
    duration_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    access_log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "fields": {
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration_ms, 2),
                "request_id": request_id,
                "session": session.short_id if session is not None else None,
                "remote_addr": request.remote_addr,
            }
        },
    )
    return response


def init_app(app: Flask) -> None:
    """Assign request ids before anything else runs and log every response.

    Call it before other extensions register their hooks: ``before_request``
    hooks run in registration order (so even a rate-limited request has an
    id) and ``after_request`` hooks in reverse (so the log sees final headers).
    """
    app.before_request(_begin)
    app.after_request(_finish)
