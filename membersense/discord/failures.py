"""What went wrong with Discord, as the API's errors.

Everything discord.py and aiohttp can raise while MemberSense talks to
Discord is turned into one :class:`~membersense.errors.ApiError` here, with a
message of our own: exception text from those libraries can echo URLs,
payloads or headers, so it never reaches a response or a log (we log the
exception's type only).

:func:`bounded` runs one Discord operation within a time budget. When the
budget runs out while discord.py was retrying a Discord 5xx or sleeping on a
429, the answer says so (502 / 503) instead of a bare timeout (504): an
aiohttp trace records the last response of the running task (and reports
every response to the :class:`~membersense.discord.guard.InvalidRequestBudget`).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import discord

from membersense import metrics
from membersense.errors import (
    ApiError,
    BadRequest,
    DiscordTimeout,
    DiscordUnavailable,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)

__all__ = ["INVALID_TOKEN", "api_error", "bounded", "fresh_copy", "http_trace",
           "missing_intents_error"]

log = logging.getLogger("membersense.discord")

if TYPE_CHECKING:
    from membersense.discord.guard import InvalidRequestBudget

T = TypeVar("T")
E = TypeVar("E", bound=ApiError)

INVALID_TOKEN = "Invalid Discord token"

#: Gateway close codes after which discord.py never reconnects.
_CLOSE_AUTHENTICATION_FAILED = 4004
_CLOSE_DISALLOWED_INTENTS = 4014

#: [status, Retry-After] of the last Discord response seen by the current task.
_last_response: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "membersense_last_discord_response", default=None
)


def http_trace(budget: InvalidRequestBudget) -> aiohttp.TraceConfig:
    """An aiohttp trace that reports each Discord response to *budget* and to :func:`bounded`."""

    async def on_request_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams
                             ) -> None:
        response = params.response
        budget.record(response.status, response.headers.get("X-RateLimit-Scope"))
        metrics.discord_response(response.status)
        seen = _last_response.get()
        if seen is not None:
            seen[:] = [response.status, response.headers.get("Retry-After")]

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


def fresh_copy(error: E) -> E:
    """A new exception equal to *error* (status, message, headers), without its traceback.

    An error kept to answer several callers (a failed login, a connection that
    ended, a rebuild that failed) is raised through a copy each time: one
    instance raised in several request threads at once would have its
    ``__traceback__`` and ``__context__`` rewritten by all of them.
    """
    return copy.copy(error)


def missing_intents_error(names: list[str]) -> BadRequest:
    """400 naming the privileged intents to switch on in the Developer Portal."""
    listed = " and ".join(names)
    return BadRequest(
        f"The bot needs the {listed} enabled: turn {'them' if len(names) > 1 else 'it'} on "
        "in the Discord Developer Portal (Bot > Privileged Gateway Intents), then log in again"
    )


def api_error(exc: BaseException, *, not_found: str = "Not found") -> ApiError:
    """The API error for *exc*; logs anything unexpected by type only."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, discord.LoginFailure):
        return Unauthorized(INVALID_TOKEN)
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return missing_intents_error(["Server Members Intent", "Message Content Intent"])
    if isinstance(exc, discord.ConnectionClosed):
        if exc.code == _CLOSE_AUTHENTICATION_FAILED:
            return Unauthorized(INVALID_TOKEN)
        if exc.code == _CLOSE_DISALLOWED_INTENTS:
            return missing_intents_error(["Server Members Intent", "Message Content Intent"])
        log.warning("Discord closed the gateway connection", extra={"fields": {"code": exc.code}})
        return DiscordUnavailable("Discord closed the gateway connection")
    if isinstance(exc, discord.RateLimited):
        return ServiceUnavailable("Discord is rate limiting this bot; try again later",
                                  retry_after=exc.retry_after)
    if isinstance(exc, discord.NotFound):
        return NotFound(not_found)
    if isinstance(exc, discord.Forbidden):
        return Forbidden("The bot does not have access to this resource")
    if isinstance(exc, discord.DiscordServerError):
        return DiscordUnavailable()
    if isinstance(exc, discord.HTTPException):
        if exc.status == 401:
            return Unauthorized("Discord no longer accepts this bot's token")
        if exc.status == 429:  # a 429 that is not a rate limit (Cloudflare): back off
            return ServiceUnavailable("Discord refused the request; try again later",
                                      retry_after=_retry_after(exc.response))
        log.warning("Discord answered an unexpected status", extra={"fields": {"status": exc.status}})
        return DiscordUnavailable("Discord rejected the request")
    if isinstance(exc, discord.GatewayNotFound):
        return DiscordUnavailable("Discord's gateway is unavailable")
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        log.warning("could not reach Discord: %s", type(exc).__name__)
        return DiscordUnavailable("Could not reach Discord")
    if isinstance(exc, TimeoutError):
        return DiscordTimeout()
    log.error("unexpected error talking to Discord: %s", type(exc).__name__)
    return DiscordUnavailable("Discord request failed")


def _retry_after(response: Any) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


async def bounded(operation: Awaitable[T], timeout: float, *, not_found: str = "Not found") -> T:
    """Await *operation* for at most *timeout* seconds; every failure becomes an ApiError."""
    seen: list[Any] = []
    token = _last_response.set(seen)
    try:
        async with asyncio.timeout(timeout):
            return await operation
    except TimeoutError:
        status = seen[0] if seen else None
        if status == 429:
            raise ServiceUnavailable("Discord is rate limiting this bot; try again later",
                                     retry_after=_float_or_none(seen[1])) from None
        if status is not None and status >= 500:
            raise DiscordUnavailable() from None
        raise DiscordTimeout() from None
    except ApiError:
        raise
    except Exception as exc:
        raise api_error(exc, not_found=not_found) from None
    finally:
        _last_response.reset(token)


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
