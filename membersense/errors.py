"""The API's errors and its one JSON error path.

Every error response, whatever raised it (a view, werkzeug's routing, the
rate limiter, a request body that is too large, the Discord layer, an
unexpected exception), is rendered here as ``{"error": "<message>"}`` with
the right status. Nothing of an exception's own text or traceback is ever
sent, and unexpected exceptions are logged by type and location only,
because exception text can carry secrets (a token echoed in an error
message, say).

The Discord layer raises its own transport-neutral errors
(:mod:`membersense.discord.errors`); :data:`DISCORD_STATUSES` is the one table
that gives each its HTTP status.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, json
from werkzeug.exceptions import HTTPException

from membersense.discord import errors as discord_errors
from membersense.sessions import LoginRefused, Refusal, StoreUnavailable

__all__ = [
    "ApiError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "TooManyRequests",
    "ServiceUnavailable",
    "DISCORD_STATUSES",
    "register_error_handlers",
]

log = logging.getLogger("membersense.errors")


class ApiError(HTTPException):
    """An error with a message meant for the API client.

    Subclasses fix the status; *message* overrides the class default. With
    *retry_after* (seconds, else the class's :attr:`default_retry_after`), the
    answer says when to try again, both as ``Retry-After`` and as
    ``retryAfter`` in the body, rounded up to whole seconds and never below 1.
    """

    code = 500
    description = "Internal Server Error"
    #: Retry-After when the raiser knows no better (None: the answer has none).
    default_retry_after: float | None = None

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message or self.description)
        self.extra, self.headers = _retry_fields(
            self.default_retry_after if retry_after is None else retry_after
        )


def _retry_fields(retry_after: float | None) -> tuple[dict[str, Any], dict[str, str]]:
    # The body field and the header of an answer that says when to try again.
    if retry_after is None:
        return {}, {}
    seconds = max(1, math.ceil(retry_after))
    return {"retryAfter": seconds}, {"Retry-After": str(seconds)}


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
    """429: the client exceeded its request budget, or a cap of what it may hold open.

    Always says when to try again, as every 429 of the API does: *retry_after*
    when known (the rate limit's window), else :attr:`default_retry_after`, for
    a cap that frees up only when the client closes something (sessions,
    webhooks) and a retry at once would only be refused again.
    """

    code = 429
    description = "Too many requests"
    default_retry_after = 60.0


class ServiceUnavailable(ApiError):
    """503: MemberSense cannot take this request now.

    Always says when to try again: *retry_after* when known, else
    :attr:`default_retry_after` (the server is full, or shutting down), so
    clients back off instead of retrying at once.
    """

    code = 503
    description = "Service Unavailable"
    default_retry_after = 10.0


#: The HTTP status of each Discord-layer error (a subclass takes its nearest listed base's).
DISCORD_STATUSES: dict[type[discord_errors.DiscordError], int] = {
    discord_errors.DiscordError: 502,
    discord_errors.InvalidToken: 401,
    discord_errors.BotReleased: 401,
    discord_errors.MissingIntents: 400,
    discord_errors.NoGuilds: 400,
    discord_errors.NotMessageable: 400,
    discord_errors.InvalidMessage: 400,
    discord_errors.MissingAccess: 403,
    discord_errors.GuildNotFound: 404,
    discord_errors.ChannelNotFound: 404,
    discord_errors.MessageNotFound: 404,
    discord_errors.RateLimited: 503,
    discord_errors.DailyLoginsUsed: 503,
    discord_errors.MembersLoading: 503,
    discord_errors.HeldBack: 503,
    discord_errors.Busy: 503,
    discord_errors.Reconnecting: 503,
    discord_errors.ServiceClosed: 503,
    discord_errors.DiscordUnavailable: 502,
    discord_errors.DiscordTimeout: 504,
}

#: Retry-After of a 503 for which the Discord layer knew no better.
DEFAULT_RETRY_AFTER_S = 5


def discord_status(error: discord_errors.DiscordError) -> int:
    """The HTTP status for a Discord-layer error."""
    for cls in type(error).__mro__:
        status = DISCORD_STATUSES.get(cls)
        if status is not None:
            return status
    return 502


def _json_error(
    status: int,
    message: str,
    *,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
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
        return _json_error(
            error.code, str(error.description), extra=error.extra, headers=error.headers
        )
    # werkzeug's own exceptions (404, 405, 413 ...): its short name, never the
    # long description, and keep headers that matter (Allow on a 405).
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    status = error.code or 500
    message = "Internal Server Error" if status >= 500 else error.name
    return _json_error(status, message, headers=headers)


def _handle_discord_error(error: discord_errors.DiscordError) -> Response:
    status = discord_status(error)
    retry_after = error.retry_after
    if retry_after is None and status == 503:
        retry_after = DEFAULT_RETRY_AFTER_S  # every 503 says when to come back
    extra, headers = _retry_fields(retry_after)
    return _json_error(status, error.message, extra=extra, headers=headers)


#: Retry-After of a login refused because the server is full: sessions end
#: when their clients log out or go idle, so a while, not a moment.
FULL_RETRY_AFTER_S = 60
#: Retry-After of a login refused during shutdown: another instance may take it.
CLOSING_RETRY_AFTER_S = 1

#: Each login refusal as an API error.
LOGIN_REFUSALS: dict[Refusal, Callable[[], ApiError]] = {
    Refusal.FULL: lambda: ServiceUnavailable(
        "Maximum number of concurrent users reached", retry_after=FULL_RETRY_AFTER_S
    ),
    Refusal.CLOSED: lambda: ServiceUnavailable(
        "Server is shutting down", retry_after=CLOSING_RETRY_AFTER_S
    ),
    Refusal.TOKEN: lambda: TooManyRequests(
        "Too many sessions are open with this bot token: log out of one first",
        retry_after=FULL_RETRY_AFTER_S,
    ),
    Refusal.CLIENT: lambda: TooManyRequests(
        "Too many sessions are open from this address: log out of one first",
        retry_after=FULL_RETRY_AFTER_S,
    ),
}


def _handle_login_refused(error: LoginRefused) -> Response:
    return _handle_http_exception(LOGIN_REFUSALS[error.refusal]())


def _handle_store_unavailable(error: StoreUnavailable) -> Response:
    extra, headers = _retry_fields(error.retry_after)
    return _json_error(503, "Session store unavailable", extra=extra, headers=headers)


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
    app.register_error_handler(discord_errors.DiscordError, _handle_discord_error)
    app.register_error_handler(StoreUnavailable, _handle_store_unavailable)
    app.register_error_handler(LoginRefused, _handle_login_refused)
    app.register_error_handler(Exception, _handle_unexpected)
