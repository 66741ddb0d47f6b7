"""Discord's REST API (v10) over the sandbox world, mounted at ``/api/v10`` and ``/api``.

Every answer passes through :func:`handle_api`: invalid-request guard, route matching
(Discord's 404/405 bodies), bot authentication (401), rate-limit buckets (429 and the
``X-RateLimit-*`` headers), injected faults, then the endpoint.  Endpoints validate their
input as Discord does (400 / 50035 with the nested ``errors`` object).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from membersense.sandbox import responses as err
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

MAX_CONTENT = 2000
MAX_EMBEDS = 10
#: Message flags a bot may set when sending or editing (SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS).
SETTABLE_MESSAGE_FLAGS = (1 << 2) | (1 << 12)
_ALLOWED_MENTION_TYPES = ("everyone", "roles", "users")


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
            raise InvalidFormBody(name, "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.') from None
        if value < minimum:
            raise InvalidFormBody(name, "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {minimum}.")
        if value > maximum:
            raise InvalidFormBody(name, "NUMBER_TYPE_MAX", f"int value should be less than or equal to {maximum}.")
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


def parse_snowflake(raw: Any, where: str) -> int:
    """A snowflake given as string or int (Discord's 50035 NUMBER_TYPE_COERCE otherwise)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**64:
        return raw
    if isinstance(raw, str) and raw.isdigit() and int(raw) < 2**64:
        return int(raw)
    raise InvalidFormBody(where, "NUMBER_TYPE_COERCE", f'Value "{raw}" is not snowflake.')


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
    return {"url": _gateway_url(call.request), "shards": 1,
            "session_start_limit": call.world.session_start_limit_payload(call.me)}


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
    return [call.world.member_payload(guild, m) for m in ordered[start:start + limit]]


async def search_members(call: Call) -> Any:
    """GET /guilds/{guild_id}/members/search (``query`` 1-100 characters, ``limit`` 1-1000)."""
    query = call.request.query.get("query")
    if query is None:
        raise InvalidFormBody("query", "BASE_TYPE_REQUIRED", "This field is required")
    if not 1 <= len(query) <= 100:
        raise InvalidFormBody("query", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
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


# ---------------------------------------------------------------- message bodies
@dataclass
class _Upload:
    filename: str
    content_type: str | None
    size: int


async def _read_body(call: Call) -> tuple[dict[str, Any], list[_Upload]]:
    """The JSON body (or multipart ``payload_json`` plus ``files[n]``) of a message request."""
    request = call.request
    uploads: list[_Upload] = []
    if request.content_type == "multipart/form-data":
        payload: Any = {}
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            data = await part.read(decode=False)  # type: ignore[union-attr]
            name = part.name or ""
            if name == "payload_json":
                payload = _decode_json(bytes(data))
            elif name.startswith("files[") or name == "file":
                uploads.append(_Upload(part.filename or "file", part.headers.get("Content-Type"), len(data)))  # type: ignore[union-attr]
    else:
        raw = await request.read()
        payload = _decode_json(raw) if raw.strip() else {}
    if not isinstance(payload, dict):
        raise InvalidFormBody("", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    return payload, uploads


def _decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise err.invalid_json() from None


def _content(body: dict[str, Any]) -> str | None:
    content = body.get("content")
    if content is None:
        return None
    if not isinstance(content, str):
        raise InvalidFormBody("content", "BASE_TYPE_STRING", f'Could not interpret "{content}" as string.')
    if len(content) > MAX_CONTENT:
        raise InvalidFormBody("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
    return content


def _string(value: Any, path: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise InvalidFormBody(path, "BASE_TYPE_STRING", f'Could not interpret "{value}" as string.')
    if len(value) > max_length:
        raise InvalidFormBody(path, "BASE_TYPE_MAX_LENGTH", f"Must be {max_length} or fewer in length.")
    return value


def _url(value: Any, path: str) -> str:
    text = _string(value, path, 2048)
    if not text.startswith(("http://", "https://", "attachment://")):
        raise InvalidFormBody(path, "URL_TYPE_INVALID_URL", "Not a well formed URL.")
    return text


def _embed(raw: Any, path: str) -> dict[str, Any]:
    """A rich embed as Discord stores it (known fields only, validated)."""
    if not isinstance(raw, dict):
        raise InvalidFormBody(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    embed: dict[str, Any] = {"type": "rich"}
    for key, limit in (("title", 256), ("description", 4096)):
        if raw.get(key) is not None:
            embed[key] = _string(raw[key], f"{path}.{key}", limit)
    if raw.get("url") is not None:
        embed["url"] = _url(raw["url"], f"{path}.url")
    if raw.get("timestamp") is not None:
        embed["timestamp"] = _string(raw["timestamp"], f"{path}.timestamp", 64)
    if raw.get("color") is not None:
        color = raw["color"]
        if isinstance(color, bool) or not isinstance(color, int) or not 0 <= color <= 0xFFFFFF:
            raise InvalidFormBody(f"{path}.color", "NUMBER_TYPE_MAX", "int value should be less than or equal to 16777215.")
        embed["color"] = color
    for key in ("image", "thumbnail"):
        if isinstance(raw.get(key), dict) and raw[key].get("url") is not None:
            url = _url(raw[key]["url"], f"{path}.{key}.url")
            embed[key] = {"url": url, "proxy_url": url, "width": 0, "height": 0}
    if isinstance(raw.get("footer"), dict):
        embed["footer"] = {"text": _string(raw["footer"].get("text"), f"{path}.footer.text", 2048)}
        if raw["footer"].get("icon_url") is not None:
            embed["footer"]["icon_url"] = _url(raw["footer"]["icon_url"], f"{path}.footer.icon_url")
    if isinstance(raw.get("author"), dict):
        embed["author"] = {"name": _string(raw["author"].get("name"), f"{path}.author.name", 256)}
        for key in ("url", "icon_url"):
            if raw["author"].get(key) is not None:
                embed["author"][key] = _url(raw["author"][key], f"{path}.author.{key}")
    if raw.get("fields") is not None:
        fields = raw["fields"]
        if not isinstance(fields, list) or len(fields) > 25:
            raise InvalidFormBody(f"{path}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        embed["fields"] = []
        for i, item in enumerate(fields):
            if not isinstance(item, dict):
                raise InvalidFormBody(f"{path}.fields.{i}", "DICT_TYPE_CONVERT",
                                      "Only dictionaries may be used in a DictType")
            embed["fields"].append({
                "name": _string(item.get("name"), f"{path}.fields.{i}.name", 256),
                "value": _string(item.get("value"), f"{path}.fields.{i}.value", 1024),
                "inline": bool(item.get("inline", False)),
            })
    return embed


def _embeds(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    raw = body.get("embeds")
    if raw is None and body.get("embed") is not None:  # the pre-v8 single-embed field
        raw = [body["embed"]]
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidFormBody("embeds", "BASE_TYPE_LIST", "Must be an array.")
    if len(raw) > MAX_EMBEDS:
        raise InvalidFormBody("embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
    return [_embed(e, f"embeds.{i}") for i, e in enumerate(raw)]


def _allowed_mentions(body: dict[str, Any]) -> dict[str, Any] | None:
    raw = body.get("allowed_mentions")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidFormBody("allowed_mentions", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    parse = raw.get("parse", [])
    if not isinstance(parse, list):
        raise InvalidFormBody("allowed_mentions.parse", "BASE_TYPE_LIST", "Must be an array.")
    for i, kind in enumerate(parse):
        if kind not in _ALLOWED_MENTION_TYPES:
            raise InvalidFormBody(f"allowed_mentions.parse.{i}", "BASE_TYPE_CHOICES",
                                  "Value must be one of ('everyone', 'roles', 'users').")
    checked: dict[str, Any] = {"parse": list(parse), "replied_user": raw.get("replied_user") is True}
    for kind in ("users", "roles"):
        ids = raw.get(kind, [])
        if not isinstance(ids, list):
            raise InvalidFormBody(f"allowed_mentions.{kind}", "BASE_TYPE_LIST", "Must be an array.")
        if len(ids) > 100:
            raise InvalidFormBody(f"allowed_mentions.{kind}", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        checked[kind] = [parse_snowflake(v, f"allowed_mentions.{kind}.{i}") for i, v in enumerate(ids)]
        if checked[kind] and kind in parse:
            raise InvalidFormBody("allowed_mentions", "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                                  f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.')
    return checked


def _reference(body: dict[str, Any], channel: Channel) -> Message | None:
    raw = body.get("message_reference")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidFormBody("message_reference", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    if raw.get("message_id") is None:
        raise InvalidFormBody("message_reference.message_id", "BASE_TYPE_REQUIRED", "This field is required")
    message_id = parse_snowflake(raw["message_id"], "message_reference.message_id")
    fail = raw.get("fail_if_not_exists", True)
    if raw.get("channel_id") is not None and parse_snowflake(raw["channel_id"], "message_reference.channel_id") != channel.id:
        raise InvalidFormBody("message_reference", "REPLIES_CANNOT_REFERENCE_OTHER_CHANNEL",
                              "Cannot reply to a message in a different channel")
    referenced = channel.messages.get(message_id)
    if referenced is None and fail is not False:
        raise InvalidFormBody("message_reference", "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
    return referenced


def _flags(body: dict[str, Any]) -> int | None:
    flags = body.get("flags")
    if flags is None:
        return None
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise InvalidFormBody("flags", "NUMBER_TYPE_COERCE", f'Value "{flags}" is not int.')
    return flags & SETTABLE_MESSAGE_FLAGS


def _nonce(body: dict[str, Any]) -> int | str | None:
    nonce = body.get("nonce")
    if nonce is None:
        return None
    if isinstance(nonce, str) and len(nonce) <= 25:
        return nonce
    if isinstance(nonce, int) and not isinstance(nonce, bool) and -(2**63) <= nonce < 2**63:
        return nonce
    raise InvalidFormBody("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")


def _attachments(uploads: list[_Upload], body: dict[str, Any], call: Call, channel: Channel) -> list[dict[str, Any]]:
    meta = body.get("attachments") if isinstance(body.get("attachments"), list) else []
    attachments = []
    for index, upload in enumerate(uploads):
        attachment_id = call.world.snowflakes.next()
        path = f"attachments/{channel.id}/{attachment_id}/{upload.filename}"
        item: dict[str, Any] = {"id": str(attachment_id), "filename": upload.filename, "size": upload.size,
                                "url": f"https://cdn.discordapp.com/{path}",
                                "proxy_url": f"https://media.discordapp.net/{path}"}
        if upload.content_type:
            item["content_type"] = upload.content_type
        described = next((m for m in meta if isinstance(m, dict) and str(m.get("id")) == str(index)), None)
        if described is not None and isinstance(described.get("description"), str):
            item["description"] = described["description"][:1024]
        attachments.append(item)
    return attachments


async def create_message(call: Call) -> Any:
    """POST /channels/{channel_id}/messages (content 1-2000, embeds, allowed_mentions, message_reference, files)."""
    guild, channel = _text_channel(call)
    if not call.permissions(guild, channel) & PERM_SEND_MESSAGES:
        raise err.missing_permissions()
    body, uploads = await _read_body(call)
    content = _content(body) or ""
    embeds = _embeds(body) or []
    allowed = _allowed_mentions(body)
    reference = _reference(body, channel)
    flags = _flags(body) or 0
    nonce = _nonce(body)
    tts = body.get("tts") is True
    attachments = _attachments(uploads, body, call, channel)
    if not content and not embeds and not attachments:
        raise err.empty_message()
    users, roles, everyone = call.world.resolve_mentions(guild, content, allowed)
    # A reply pings (and so lists in `mentions`) the replied-to author unless allowed_mentions says not to.
    if reference is not None and reference.author.id not in users and (allowed is None or allowed["replied_user"]):
        users.append(reference.author.id)
    message = call.world.create_message(channel, call.me.user, content, embeds=embeds, attachments=attachments,
                                        reference=reference, mention_ids=users, mention_role_ids=roles,
                                        mention_everyone=everyone, tts=tts, nonce=nonce, flags=flags)
    return call.world.message_payload(message)


async def edit_message(call: Call) -> Any:
    """PATCH /channels/{channel_id}/messages/{message_id} (the bot's own messages; others' only ``flags``)."""
    guild, channel = _text_channel(call)
    message = call.message(channel)
    body, _ = await _read_body(call)
    if message.author.id != call.me.id:
        if set(body) - {"flags"} or not call.permissions(guild, channel) & PERM_MANAGE_MESSAGES:
            raise err.cannot_edit_others()
    content = _content(body) if "content" in body else message.content
    embeds = _embeds(body) if ("embeds" in body or "embed" in body) else message.embeds
    allowed = _allowed_mentions(body)
    flags = _flags(body)
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
    if message.author.id != call.me.id and not call.permissions(guild, channel) & PERM_MANAGE_MESSAGES:
        raise err.missing_permissions()
    call.world.delete_message(message)
    return None


ROUTES = RouteTable([
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
])


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


async def _answer(request: web.Request, state: SandboxState, path: str,
                  ip: str) -> tuple[web.StreamResponse, str | None]:
    token = _token(request)
    bot = state.world.bot_for_token(token) if token is not None else None
    identity = f"bot:{bot.id}" if bot is not None else f"ip:{ip}"
    try:
        route, params = ROUTES.match(request.method, path)
    except ApiError as exc:
        # Unknown routes and methods share one bucket, so even these answers carry the headers.
        info = state.ratelimits.hit(identity, UNKNOWN_ROUTE_KEY, "")
        if info.limited:
            return rate_limited_response(info.retry_after, scope="user", headers=info.headers()), "user"
        return _with_headers(exc.response(), info), None
    info = state.ratelimits.hit(identity, route.key, major_parameter(params))
    if info.limited:
        return rate_limited_response(info.retry_after, scope=info.scope or "user", headers=info.headers()), info.scope
    if route.auth and bot is None:
        return _with_headers(err.unauthorized().response(), info), None

    fault = state.faults.take(path)
    if fault is not None:
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.status == 429:
            return rate_limited_response(fault.retry_after, scope="shared", headers=info.headers()), "shared"
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
