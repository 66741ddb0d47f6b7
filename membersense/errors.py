"""The API's errors and its one JSON error path.

Every error response, whatever raised it (a view, werkzeug's routing, the
rate limiter, a request body that is too large, an unexpected exception), is
rendered here as ``{"error": "<message>"}`` with the right status. Nothing of
an exception's own text or traceback is ever sent, and unexpected exceptions
are logged by type and location only, because exception text can carry
secrets (a token echoed in an error message, say).
"""

from __future__ import annotations

import logging
import math
import traceback
from typing import Any

from flask import Flask, Response, current_app, g, json
from werkzeug.exceptions import HTTPException

__all__ = [
    "ApiError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "TooManyRequests",
    "ServiceUnavailable",
    "DiscordUnavailable",
    "DiscordTimeout",
    "register_error_handlers",
]

log = logging.getLogger("membersense.errors")


class ApiError(HTTPException):
    """An error with a message meant for the API client.

    Subclasses fix the status; *message* overrides the class default. With
    *retry_after* (seconds), the answer says when to try again, both as
    ``Retry-After`` and as ``retryAfter`` in the body, rounded up to whole
    seconds and never below 1.
    """

    code = 500
    description = "Internal Server Error"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message or self.description)
        self.extra: dict[str, Any] = {}
        self.headers: dict[str, str] = {}
        if retry_after is not None:
            seconds = max(1, math.ceil(retry_after))
            self.extra["retryAfter"] = seconds
            self.headers["Retry-After"] = str(seconds)


class BadRequest(ApiError):
    """400: the request is malformed or a parameter is out of range."""

    code = 400
    description = "Bad Request"


class Unauthorized(ApiError):
    """401: no valid session, or Discord rejected the token."""

    code = 401
    description = "Unauthorized"


class Forbidden(ApiError):
    """403: the bot may not read what was asked for."""

    code = 403
    description = "Forbidden"


class NotFound(ApiError):
    """404: no such resource (or not visible to this bot)."""

    code = 404
    description = "Not Found"


class TooManyRequests(ApiError):
    """429: the client exceeded its request budget."""

    code = 429
    description = "Too many requests"


class ServiceUnavailable(ApiError):
    """503: MemberSense cannot take this request now.

    Always says when to try again: *retry_after* when known, else
    :attr:`default_retry_after` (the server is full, or shutting down), so
    clients back off instead of retrying at once.
    """

    code = 503
    description = "Service Unavailable"
    default_retry_after = 10.0

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=self.default_retry_after if retry_after is None
                         else retry_after)


class DiscordUnavailable(ApiError):
    """502: Discord answered with a server error or could not be reached."""

    code = 502
    description = "Discord is unavailable"


class DiscordTimeout(ApiError):
    """504: Discord did not answer within the configured timeout."""

    code = 504
    description = "Discord did not respond in time"


def _json_error(status: int, message: str, *, extra: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> Response:
    """Build the JSON error response every error path uses."""
    body = {"error": message, **(extra or {})}
    response = current_app.response_class(
        json.dumps(body) + "\n", status=status, mimetype="application/json"
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _handle_http_exception(error: HTTPException) -> Response:
    if isinstance(error, ApiError):
        return _json_error(error.code, str(error.description), extra=error.extra,
                          headers=error.headers)
    # werkzeug's own exceptions (404, 405, 413 ...): its short name, never the
    # long description, and keep headers that matter (Allow on a 405).
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    status = error.code or 500
    message = "Internal Server Error" if status >= 500 else error.name
    return _json_error(status, message, headers=headers)


def _handle_unexpected(error: Exception) -> Response:
    # Type and innermost location only: exception text may hold a secret.
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f"{frame.filename}:{frame.lineno} in {frame.name}" if frame else "unknown"
    log.error(
        "unhandled %s at %s",
        type(error).__name__,
        where,
        extra={"fields": {"request_id": g.get("request_id"), "exception": type(error).__name__}},
    )
    return _json_error(500, "Internal Server Error")


def register_error_handlers(app: Flask) -> None:
    """Route every error the app can produce through the JSON error path."""
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
