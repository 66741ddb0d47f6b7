"""Calls to Discord, bounded in time, with every failure as a :mod:`.errors` exception.

Everything discord.py and aiohttp can raise while MemberSense talks to
Discord becomes one :class:`~membersense.discord.errors.DiscordError` here
(:func:`error_from`), with a message of our own: exception text from those
libraries can echo URLs, payloads or headers, so it never reaches a response
or a log (we log the exception's type only).

:func:`bounded` runs one Discord operation within a time budget. When the
budget runs out while discord.py was retrying a Discord 5xx or sleeping on a
429, the error says so (unavailable, rate limited) instead of a bare timeout:
an aiohttp trace records the last response of the running task, and reports
every response to the :class:`~membersense.discord.invalid_requests.InvalidRequestBudget`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import discord
from discord.http import HTTPClient

from membersense.discord import compat
from membersense.discord.errors import (
    ChannelNotFound,
    DiscordError,
    DiscordTimeout,
    DiscordUnavailable,
    InvalidMessage,
    InvalidToken,
    MessageNotFound,
    MissingAccess,
    MissingIntents,
    RateLimited,
)

__all__ = ["PRIVILEGED_INTENTS", "RestOperations", "bounded", "error_from", "http_trace"]

log = logging.getLogger("membersense.discord")

T = TypeVar("T")

#: The privileged intents MemberSense needs, as the Developer Portal names them.
PRIVILEGED_INTENTS = ("Server Members Intent", "Message Content Intent")

#: Gateway close codes after which discord.py never reconnects.
_CLOSE_AUTHENTICATION_FAILED = 4004
_CLOSE_DISALLOWED_INTENTS = 4014

#: [status, Retry-After] of the last Discord response seen by the current task.
_last_response: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "membersense_last_discord_response", default=None
)

#: Discord's JSON error codes of a 404 that say what was not found.
_NOT_FOUND_CODES: dict[int, type[DiscordError]] = {10003: ChannelNotFound, 10008: MessageNotFound}
#: Discord's JSON error code of a 403 for editing another user's message.
_CANNOT_EDIT_OTHERS = 50005

ResponseListener = Callable[[int, "str | None"], None]


def http_trace(on_response: ResponseListener) -> aiohttp.TraceConfig:
    """An aiohttp trace reporting each Discord response's status and rate-limit scope
    to *on_response*, and to :func:`bounded`."""

    async def on_request_end(
        session: Any, context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        response = params.response
        on_response(response.status, response.headers.get("X-RateLimit-Scope"))
        seen = _last_response.get()
        if seen is not None:
            seen[:] = [response.status, response.headers.get("Retry-After")]

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


def error_from(
    exc: BaseException, *, not_found: type[DiscordError] = DiscordUnavailable
) -> DiscordError:
    """The :class:`DiscordError` for *exc*; logs anything unexpected by type only.

    *not_found* is what a 404 from Discord means in the caller's context, unless
    Discord's error code says (an unknown channel or message).
    """
    if isinstance(exc, DiscordError):
        return exc
    if isinstance(exc, discord.LoginFailure):
        return InvalidToken()
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return MissingIntents(intents=PRIVILEGED_INTENTS)
    if isinstance(exc, discord.ConnectionClosed):
        if exc.code == _CLOSE_AUTHENTICATION_FAILED:
            return InvalidToken()
        if exc.code == _CLOSE_DISALLOWED_INTENTS:
            return MissingIntents(intents=PRIVILEGED_INTENTS)
        log.warning("Discord closed the gateway connection", extra={"fields": {"code": exc.code}})
        return DiscordUnavailable("Discord closed the gateway connection")
    if isinstance(exc, discord.RateLimited):
        return RateLimited(retry_after=exc.retry_after)
    if isinstance(exc, discord.NotFound):
        return _NOT_FOUND_CODES.get(exc.code, not_found)()
    if isinstance(exc, discord.Forbidden):
        if exc.code == _CANNOT_EDIT_OTHERS:
            return MissingAccess("The bot can only edit its own messages")
        return MissingAccess()
    if isinstance(exc, discord.DiscordServerError):
        return DiscordUnavailable()
    if isinstance(exc, discord.HTTPException):
        if exc.status == 401:
            return InvalidToken("Discord no longer accepts this bot's token")
        if exc.status == 429:  # a 429 that is not a rate limit (Cloudflare): back off
            return RateLimited(
                "Discord refused the request; try again later",
                retry_after=_retry_after(exc.response),
            )
        if exc.status == 400:
            return InvalidMessage()
        log.warning(
            "Discord answered an unexpected status", extra={"fields": {"status": exc.status}}
        )
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


async def bounded(
    operation: Awaitable[T], timeout: float, *, not_found: type[DiscordError] = DiscordUnavailable
) -> T:
    """Await *operation* for at most *timeout* seconds; every failure is a DiscordError."""
    seen: list[Any] = []
    token = _last_response.set(seen)
    try:
        async with asyncio.timeout(timeout):
            return await operation
    except TimeoutError:
        status = seen[0] if seen else None
        if status == 429:
            raise RateLimited(retry_after=_float_or_none(seen[1])) from None
        if status is not None and status >= 500:
            raise DiscordUnavailable() from None
        raise DiscordTimeout() from None
    except DiscordError:
        raise
    except Exception as exc:
        raise error_from(exc, not_found=not_found) from None
    finally:
        _last_response.reset(token)


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class RestOperations:
    """One bot's calls to Discord's REST API, each bounded by *timeout* and its 404 named.

    *http()* gives (on the loop) the discord.py ``HTTPClient`` to call with: the gateway
    connection's own, or in Redis mode a REST-only one; it raises when there is none
    to use (the connection closed). Every method runs on the bridge's loop.
    """

    def __init__(self, http: Callable[[], Awaitable[HTTPClient]], timeout: float) -> None:
        self._http = http
        self._timeout = timeout

    async def messages(
        self, channel_id: int, limit: int, before: int | None, after: int | None, around: int | None
    ) -> list[dict[str, Any]]:
        """Discord's JSON for up to *limit* messages of a channel."""
        http = await self._http()
        return await bounded(
            compat.message_history(
                http, channel_id, limit, before=before, after=after, around=around
            ),
            self._timeout,
            not_found=ChannelNotFound,
        )

    async def send_message(self, channel_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
        """Post *body* (see :mod:`~membersense.discord.outgoing`) in a channel: the
        message's JSON (the earlier one, when Discord recognised a repeated nonce)."""
        http = await self._http()
        return await bounded(
            compat.send_message(http, channel_id, body), self._timeout, not_found=ChannelNotFound
        )

    async def edit_message(
        self, channel_id: int, message_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Edit one of the bot's messages with *body*: the edited message's JSON."""
        http = await self._http()
        return await bounded(
            compat.edit_message(http, channel_id, message_id, body),
            self._timeout,
            not_found=MessageNotFound,
        )

    async def delete_message(self, channel_id: int, message_id: int) -> None:
        """Delete a message (the bot's own, or any with Manage Messages)."""
        http = await self._http()
        await bounded(
            compat.delete_message(http, channel_id, message_id),
            self._timeout,
            not_found=MessageNotFound,
        )
