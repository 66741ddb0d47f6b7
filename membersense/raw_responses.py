"""Responses the server writes itself, outside Flask, straight onto a socket.

When a request never reaches the app (the client was too slow, opened too
many connections, or sent something gunicorn's parser refused), the worker
answers with these bytes: the same ``{"error": "..."}`` JSON and security
headers as the app's own errors, a fresh ``X-Request-ID``, and
``Connection: close``. Messages are fixed strings: nothing the client sent is
ever echoed.
"""

from __future__ import annotations

import json
from email.utils import formatdate
from http import HTTPStatus

from nanoid import generate

__all__ = ["CONTINUE", "error_response"]

#: The interim answer to ``Expect: 100-continue``.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_response(status: int, message: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response carrying ``{"error": message}``."""
    body = (json.dumps({"error": message}) + "\n").encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Date: {formatdate(usegmt=True)}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
        f"X-Request-ID: {generate()}",
    ]
    if retry_after is not None:
        lines.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
