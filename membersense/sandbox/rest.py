"""Discord's REST API (v10) over the sandbox world, mounted at ``/api/v10`` and ``/api``.

Every answer passes through :func:`handle_api`: invalid-request guard, route matching
(Discord's 404/405 bodies), bot authentication (401), rate-limit buckets (429 and the
``X-RateLimit-*`` headers), injected faults, then the endpoint.  Endpoints validate their
input as Discord does (400 / 50035 with the nested ``errors`` object).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from membersense.sandbox import message_input as body_input
from membersense.sandbox import responses as err
from membersense.sandbox.message_input import parse_snowflake
from membersense.sandbox.models import (
    CHANNEL_CATEGORY,
    INTENT_GUILD_MEMBERS,
    PERM_MANAGE_MESSAGES,
    PERM_READ_MESSAGE_HISTORY,
    PERM_SEND_MESSAGES,
    PERM_VIEW_CHANNEL,
    Bot,
    Channel,
    Guild,
    Message,
)
from membersense.sandbox.ratelimits import VIA_HEADER, RateLimitInfo, rate_limited_response
from membersense.sandbox.responses import ApiError, InvalidFormBody, json_response
from membersense.sandbox.routing import Route, RouteTable, major_parameter
from membersense.sandbox.state import STATE, SandboxState
from membersense.sandbox.world import World

_log = logging.getLogger(__name__)


@dataclass
class Call:
    """One authenticated REST call: the request, the sandbox state, the bot and the path parameters."""

    request: web.Request
    state: SandboxState
    #: None only on routes that need no authentication.
    bot: Bot | None
    params: dict[str, Any]

    @property
    def me(self) -> Bot:
        """The authenticated bot."""
        if self.bot is None:
            raise err.unauthorized()
        return self.bot

    @property
    def world(self) -> World:
        """The sandbox world."""
        return self.state.world

    # ---------------------------------------------------------------- query parameters
    def _raw(self, name: str) -> str | None:
        return self.request.query.get(name)

    def query_int(self, name: str, default: int, minimum: int, maximum: int) -> int:
        """An integer query parameter within bounds (Discord's 50035 errors otherwise)."""
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidFormBody(
                name, "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.'
            ) from None
        if value < minimum:
            raise InvalidFormBody(
                name, "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {minimum}."
            )
        if value > maximum:
            raise InvalidFormBody(
                name, "NUMBER_TYPE_MAX", f"int value should be less than or equal to {maximum}."
            )
        return value

    def query_snowflake(self, name: str) -> int | None:
        """A snowflake query parameter, or None when absent."""
        raw = self._raw(name)
        if raw is None:
            return None
        return parse_snowflake(raw, name)

    def query_bool(self, name: str) -> bool:
        """A boolean query parameter ("true"/"false"/"1"/"0"), False when absent."""
        raw = self._raw(name)
        if raw is None:
            return False
        lowered = raw.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise InvalidFormBody(name, "BASE_TYPE_BOOLEAN", "Must be either true or false.")

    # ---------------------------------------------------------------- access checks
    def guild(self) -> Guild:
        """The path's guild, if the bot is in it (404 Unknown Guild / 403 Missing Access)."""
        guild = self.world.guild(self.params["guild_id"])
        if guild is None:
            raise err.unknown_guild()
        if self.me.id not in guild.bots:
            raise err.missing_access()
        return guild

    def channel(self) -> tuple[Guild, Channel]:
        """The path's channel, if the bot can view it (404 Unknown Channel / 403 Missing Access)."""
        channel = self.world.channel(self.params["channel_id"])
        if channel is None:
            raise err.unknown_channel()
        guild = self.world.guild(channel.guild_id)
        if guild is None or self.me.id not in guild.bots:
            raise err.missing_access()
        if not self.permissions(guild, channel) & PERM_VIEW_CHANNEL:
            raise err.missing_access()
        return guild, channel

    def permissions(self, guild: Guild, channel: Channel) -> int:
        """The bot's permissions in ``channel``."""
        member = guild.members.get(self.me.id)
        return 0 if member is None else self.world.channel_permissions(guild, member, channel)

    def message(self, channel: Channel) -> Message:
        """The path's message in ``channel`` (404 Unknown Message)."""
        message = channel.messages.get(self.params["message_id"])
        if message is None:
            raise err.unknown_message()
        return message


# ==================================================================== endpoints
async def get_me(call: Call) -> Any:
    """GET /users/@me."""
    return call.world.user_payload(call.me.user, private=True)


async def get_user(call: Call) -> Any:
    """GET /users/{user_id}."""
    user = call.world.user(call.params["user_id"])
    if user is None:
        raise err.unknown_user()
    return call.world.user_payload(user)


async def get_application(call: Call) -> Any:
    """GET /oauth2/applications/@me and /applications/@me."""
    return call.world.application_payload(call.me)


def _gateway_url(request: web.Request) -> str:
    # The address the client reached us on, so the URL works however the sandbox is exposed.
    return f"ws://{request.host}/ws"


async def get_gateway(call: Call) -> Any:
    """GET /gateway (no authentication)."""
    return {"url": _gateway_url(call.request)}


async def get_gateway_bot(call: Call) -> Any:
    """GET /gateway/bot."""
    return {
        "url": _gateway_url(call.request),
        "shards": 1,
        "session_start_limit": call.world.session_start_limit_payload(call.me),
    }


async def get_my_guilds(call: Call) -> Any:
    """GET /users/@me/guilds (``before``, ``after``, ``limit`` 1-200, ``with_counts``)."""
    limit = call.query_int("limit", 200, 1, 200)
    before, after = call.query_snowflake("before"), call.query_snowflake("after")
    with_counts = call.query_bool("with_counts")
    guilds = sorted(call.world.guilds_of(call.me), key=lambda g: g.id)
    if before is not None:
        guilds = [g for g in guilds if g.id < before][-limit:]
    else:
        guilds = [g for g in guilds if after is None or g.id > after][:limit]
    return [call.world.my_guild_payload(g, call.me, with_counts=with_counts) for g in guilds]


async def get_guild(call: Call) -> Any:
    """GET /guilds/{guild_id} (``with_counts``)."""
    with_counts = call.query_bool("with_counts")
    return call.world.guild_payload(call.guild(), with_counts=with_counts)


async def get_guild_channels(call: Call) -> Any:
    """GET /guilds/{guild_id}/channels."""
    return [call.world.channel_payload(c) for c in call.guild().channels]


async def get_guild_roles(call: Call) -> Any:
    """GET /guilds/{guild_id}/roles."""
    return [call.world.role_payload(r) for r in call.guild().roles]


def _require_members_intent(call: Call) -> None:
    # Discord gates member listing on the GUILD_MEMBERS privileged intent being enabled for the app.
    if not call.me.granted_intents & INTENT_GUILD_MEMBERS:
        raise err.missing_access()


async def list_members(call: Call) -> Any:
    """GET /guilds/{guild_id}/members (``limit`` 1-1000, default 1; ``after`` a user id), ordered by user id."""
    limit = call.query_int("limit", 1, 1, 1000)
    after = call.query_snowflake("after") or 0
    guild = call.guild()
    _require_members_intent(call)
    ordered = guild.members_sorted()
    start = bisect.bisect_right(ordered, after, key=lambda m: m.user.id)
    return [call.world.member_payload(guild, m) for m in ordered[start : start + limit]]


async def search_members(call: Call) -> Any:
    """GET /guilds/{guild_id}/members/search (``query`` 1-100 characters, ``limit`` 1-1000)."""
    query = call.request.query.get("query")
    if query is None:
        raise InvalidFormBody("query", "BASE_TYPE_REQUIRED", "This field is required")
    if not 1 <= len(query) <= 100:
        raise InvalidFormBody(
            "query", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
        )
    limit = call.query_int("limit", 1, 1, 1000)
    guild = call.guild()
    _require_members_intent(call)
    return [call.world.member_payload(guild, m) for m in guild.search_members(query, limit)]


async def get_member(call: Call) -> Any:
    """GET /guilds/{guild_id}/members/{user_id}."""
    guild = call.guild()
    member = guild.members.get(call.params["user_id"])
    if member is None:
        raise err.unknown_member()
    return call.world.member_payload(guild, member)


async def get_channel(call: Call) -> Any:
    """GET /channels/{channel_id}."""
    _, channel = call.channel()
    return call.world.channel_payload(channel)


def _text_channel(call: Call) -> tuple[Guild, Channel]:
    guild, channel = call.channel()
    if channel.type == CHANNEL_CATEGORY:
        raise err.non_text_channel()
    return guild, channel


async def list_messages(call: Call) -> Any:
    """GET /channels/{channel_id}/messages (``limit`` 1-100, default 50; one of ``around``/``before``/``after``)."""
    limit = call.query_int("limit", 50, 1, 100)
    around, before, after = (call.query_snowflake(n) for n in ("around", "before", "after"))
    guild, channel = _text_channel(call)
    if not call.permissions(guild, channel) & PERM_READ_MESSAGE_HISTORY:
        return []  # Discord returns no messages rather than an error here
    if around is not None:
        found = channel.history(limit, around=around)
    elif before is not None:
        found = channel.history(limit, before=before)
    else:
        found = channel.history(limit, after=after)
    return [call.world.message_payload(m) for m in found]


async def get_message(call: Call) -> Any:
    """GET /channels/{channel_id}/messages/{message_id}."""
    guild, channel = _text_channel(call)
    if not call.permissions(guild, channel) & PERM_READ_MESSAGE_HISTORY:
        raise err.missing_permissions()
    return call.world.message_payload(call.message(channel))


async def trigger_typing(call: Call) -> Any:
    """POST /channels/{channel_id}/typing."""
    _text_channel(call)
    return None


async def create_message(call: Call) -> Any:
    """POST /channels/{channel_id}/messages (content 1-2000, embeds, allowed_mentions, message_reference, files).

    With ``nonce`` and ``enforce_nonce``, a nonce the bot already sent within the last few
    minutes returns that message instead of posting another (Discord's idempotent send).
    """
    guild, channel = _text_channel(call)
    if not call.permissions(guild, channel) & PERM_SEND_MESSAGES:
        raise err.missing_permissions()
    body, uploads = await body_input.read_body(call.request)
    content = body_input.content(body) or ""
    embeds = body_input.embeds(body) or []
    allowed = body_input.allowed_mentions(body)
    reference = body_input.reference(body, channel)
    flags = body_input.flags(body) or 0
    nonce = body_input.nonce(body)
    enforce_nonce = body_input.enforce_nonce(body) and nonce is not None
    tts = body.get("tts") is True
    attachments = body_input.attachments(uploads, body, call.world, channel)
    if not content and not embeds and not attachments:
        raise err.empty_message()
    if enforce_nonce:
        assert nonce is not None
        earlier = call.world.message_by_nonce(call.me.user, nonce)
        if earlier is not None:  # a retry: Discord answers with the message it already made
            return call.world.message_payload(earlier)
    users, roles, everyone = call.world.resolve_mentions(guild, content, allowed)
    # A reply pings (and so lists in `mentions`) the replied-to author unless allowed_mentions says not to.
    if (
        reference is not None
        and reference.author.id not in users
        and (allowed is None or allowed["replied_user"])
    ):
        users.append(reference.author.id)
    message = call.world.create_message(
        channel,
        call.me.user,
        content,
        embeds=embeds,
        attachments=attachments,
        reference=reference,
        mention_ids=users,
        mention_role_ids=roles,
        mention_everyone=everyone,
        tts=tts,
        nonce=nonce,
        flags=flags,
    )
    if enforce_nonce:
        call.world.remember_nonce(message)
    return call.world.message_payload(message)


async def edit_message(call: Call) -> Any:
    """PATCH /channels/{channel_id}/messages/{message_id} (the bot's own messages; others' only ``flags``)."""
    guild, channel = _text_channel(call)
    message = call.message(channel)
    body, _ = await body_input.read_body(call.request)
    if message.author.id != call.me.id:
        if set(body) - {"flags"} or not call.permissions(guild, channel) & PERM_MANAGE_MESSAGES:
            raise err.cannot_edit_others()
    content = body_input.content(body) if "content" in body else message.content
    embeds = body_input.embeds(body) if ("embeds" in body or "embed" in body) else message.embeds
    allowed = body_input.allowed_mentions(body)
    flags = body_input.flags(body)
    if not content and not embeds and not message.attachments:
        raise err.empty_message()
    changes: dict[str, Any] = {"content": content or "", "embeds": embeds or []}
    if "content" in body:
        users, roles, everyone = call.world.resolve_mentions(guild, content or "", allowed)
        changes.update(mention_ids=users, mention_role_ids=roles, mention_everyone=everyone)
    if flags is not None:
        changes["flags"] = flags
    call.world.edit_message(message, **changes)
    return call.world.message_payload(message)


async def delete_message(call: Call) -> Any:
    """DELETE /channels/{channel_id}/messages/{message_id} (others' messages need MANAGE_MESSAGES)."""
    guild, channel = _text_channel(call)
    message = call.message(channel)
    if (
        message.author.id != call.me.id
        and not call.permissions(guild, channel) & PERM_MANAGE_MESSAGES
    ):
        raise err.missing_permissions()
    call.world.delete_message(message)
    return None


ROUTES = RouteTable(
    [
        Route("GET", "/users/@me", get_me),
        Route("GET", "/users/@me/guilds", get_my_guilds),
        Route("GET", "/users/{user_id}", get_user),
        Route("GET", "/oauth2/applications/@me", get_application),
        Route("GET", "/applications/@me", get_application),
        Route("GET", "/gateway", get_gateway, auth=False),
        Route("GET", "/gateway/bot", get_gateway_bot),
        Route("GET", "/guilds/{guild_id}", get_guild),
        Route("GET", "/guilds/{guild_id}/channels", get_guild_channels),
        Route("GET", "/guilds/{guild_id}/roles", get_guild_roles),
        Route("GET", "/guilds/{guild_id}/members", list_members),
        Route("GET", "/guilds/{guild_id}/members/search", search_members),
        Route("GET", "/guilds/{guild_id}/members/{user_id}", get_member),
        Route("GET", "/channels/{channel_id}", get_channel),
        Route("GET", "/channels/{channel_id}/messages", list_messages),
        Route("POST", "/channels/{channel_id}/messages", create_message),
        Route("GET", "/channels/{channel_id}/messages/{message_id}", get_message),
        Route("PATCH", "/channels/{channel_id}/messages/{message_id}", edit_message),
        Route("DELETE", "/channels/{channel_id}/messages/{message_id}", delete_message),
        Route("POST", "/channels/{channel_id}/typing", trigger_typing),
    ]
)


# ==================================================================== the one entry point
#: The rate-limit bucket of requests that match no route.
UNKNOWN_ROUTE_KEY = "* /{unknown}"


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme == "Bot" else None


def _with_headers(response: web.StreamResponse, info: RateLimitInfo | None) -> web.StreamResponse:
    response.headers.update(VIA_HEADER)
    if info is not None:
        response.headers.update(info.headers())
    return response


async def handle_api(request: web.Request) -> web.StreamResponse:
    """Answer one REST request under ``/api/v10`` or ``/api`` as Discord would."""
    state = request.app[STATE]
    ip = request.remote or "unknown"
    ban = state.guard.ban_remaining(ip)
    if ban:
        return state.guard.ban_response(ban)
    path = "/" + request.match_info["tail"]
    response, scope = await _answer(request, state, path, ip)
    state.guard.record(ip, response.status, scope)
    return response


async def _answer(
    request: web.Request, state: SandboxState, path: str, ip: str
) -> tuple[web.StreamResponse, str | None]:
    token = _token(request)
    bot = state.world.bot_for_token(token) if token is not None else None
    identity = f"bot:{bot.id}" if bot is not None else f"ip:{ip}"
    try:
        route, params = ROUTES.match(request.method, path)
    except ApiError as exc:
        # Unknown routes and methods share one bucket, so even these answers carry the headers.
        info = state.ratelimits.hit(identity, UNKNOWN_ROUTE_KEY, "")
        if info.limited:
            return rate_limited_response(
                info.retry_after, scope="user", headers=info.headers()
            ), "user"
        return _with_headers(exc.response(), info), None
    info = state.ratelimits.hit(identity, route.key, major_parameter(params))
    if info.limited:
        return rate_limited_response(
            info.retry_after, scope=info.scope or "user", headers=info.headers()
        ), info.scope
    if route.auth and bot is None:
        return _with_headers(err.unauthorized().response(), info), None

    fault = state.faults.take(path)
    if fault is not None:
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.status == 429:
            return rate_limited_response(
                fault.retry_after, scope="shared", headers=info.headers()
            ), "shared"
        if fault.status is not None:
            return _with_headers(err.server_error(fault.status).response(), info), None

    try:
        body = await route.handler(Call(request=request, state=state, bot=bot, params=params))
    except ApiError as exc:
        return _with_headers(exc.response(), info), None
    except Exception:
        _log.exception("sandbox REST %s %s failed", request.method, path)
        return _with_headers(err.server_error(500).response(), info), None
    if body is None:
        return _with_headers(web.Response(status=204), info), None
    return _with_headers(json_response(body), info), None
