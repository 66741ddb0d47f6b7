"""The floor of the members benchmark: a WSGI app answering with fixed bytes from memory.

Served by the same ``gunicorn -c gunicorn.conf.py`` as MemberSense, it answers
``GET /api/members`` with the very body (and the same headers) MemberSense
sent, read once at start-up from ``MEMBERSENSE_FLOOR_BODY`` (a file path; with
``MEMBERSENSE_FLOOR_ENCODING=gzip`` the file holds the gzipped bytes MemberSense sent).
The gap between the two is what MemberSense itself costs per request.

``flask_app`` answers the same from a bare Flask view (no extensions, no
hooks): the gap from ``app`` to it is Flask's own cost, and from it to
MemberSense what MemberSense adds (session, rate limit, request id, access
log, CORS).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response

with open(os.environ["MEMBERSENSE_FLOOR_BODY"], "rb") as _file:
    BODY = _file.read()
HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(BODY))),
    ("ETag", '"floor"'),
    ("Vary", "Accept-Encoding"),
]
if os.environ.get("MEMBERSENSE_FLOOR_ENCODING"):  # the stored bytes are already encoded
    HEADERS.append(("Content-Encoding", os.environ["MEMBERSENSE_FLOOR_ENCODING"]))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer every request with the stored body."""
    if environ.get("PATH_INFO") == "/_ah/health":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status":"healthy"}']
    start_response("200 OK", HEADERS)
    return [BODY]


flask_app = Flask(__name__)


@flask_app.get("/api/members")
def _members() -> Response:
    return Response(BODY, headers=HEADERS)


@flask_app.get("/_ah/health")
def _health() -> dict[str, str]:
    return {"status": "healthy"}
