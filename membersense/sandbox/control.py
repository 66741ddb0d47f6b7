"""The sandbox's control API under ``/_sandbox/`` (JSON in and out, no bot authentication).

It changes the world as a Discord user would (members join, post, leave; channels come
and go), every change dispatched to the gateway, and it drives the sandbox itself: gateway
drops, reconnects and invalidations, injected REST faults, token revocation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from membersense.sandbox import responses as err
from membersense.sandbox.faults import FAULT_STATUSES, Fault
from membersense.sandbox.message_input import MAX_CONTENT, decode_json, parse_snowflake
from membersense.sandbox.models import (
    CHANNEL_CATEGORY,
    CHANNEL_TEXT,
    CHANNEL_TYPE_NAMES,
    PRESENCE_STATUSES,
    Channel,
    Guild,
    Message,
)
from membersense.sandbox.responses import ApiError, InvalidFormBody, json_response
from membersense.sandbox.routing import Route, RouteTable
from membersense.sandbox.state import STATE, SandboxState
from membersense.sandbox.world import World

_log = logging.getLogger(__name__)


@dataclass
class Control:
    """One control call: request, state, path parameters and the decoded JSON body."""

    request: web.Request
    state: SandboxState
    params: dict[str, Any]
    body: dict[str, Any]

    @property
    def world(self) -> World:
        """The sandbox world."""
        return self.state.world

    def guild(self) -> Guild:
        """The path's guild (404 Unknown Guild)."""
        guild = self.world.guild(self.params["guild_id"])
        if guild is None:
            raise err.unknown_guild()
        return guild

    def channel(self) -> tuple[Guild, Channel]:
        """The path's channel and its guild (404 Unknown Channel)."""
        channel = self.world.channel(self.params["channel_id"])
        guild = None if channel is None else self.world.guild(channel.guild_id)
        if channel is None or guild is None:
            raise err.unknown_channel()
        return guild, channel


def _str(
    body: dict[str, Any],
    key: str,
    *,
    required: bool = False,
    max_length: int = 100,
    nullable: bool = True,
) -> str | None:
    if key not in body or (body[key] is None and nullable and not required):
        if required:
            raise InvalidFormBody(key, "BASE_TYPE_REQUIRED", "This field is required")
        return None
    value = body[key]
    if not isinstance(value, str) or not value:
        raise InvalidFormBody(key, "BASE_TYPE_STRING", "Must be a non-empty string.")
    if len(value) > max_length:
        raise InvalidFormBody(
            key, "BASE_TYPE_MAX_LENGTH", f"Must be {max_length} or fewer in length."
        )
    return value


def _role_ids(guild: Guild, raw: Any) -> list[int]:
    """Roles given by id or by name; @everyone and managed roles cannot be assigned."""
    if not isinstance(raw, list):
        raise InvalidFormBody("roles", "BASE_TYPE_LIST", "Must be an array.")
    ids = []
    for i, item in enumerate(raw):
        if isinstance(item, str) and not item.isdigit():
            role = next((r for r in guild.roles if r.name == item), None)
        else:
            role = guild.role(parse_snowflake(item, f"roles.{i}"))
        if role is None or role.id == guild.id or role.managed:
            raise InvalidFormBody(
                f"roles.{i}", "ROLE_INVALID", f"Unknown or unassignable role {item!r}."
            )
        ids.append(role.id)
    return ids


def _status(body: dict[str, Any]) -> str | None:
    status = body.get("status")
    if status is not None and status not in PRESENCE_STATUSES:
        raise InvalidFormBody(
            "status", "BASE_TYPE_CHOICES", f"Value must be one of {PRESENCE_STATUSES}."
        )
    return status


# ==================================================================== world changes
async def state_summary(ctl: Control) -> Any:
    """GET /_sandbox/state: guilds, bots, gateway connections, faults."""
    state = ctl.state
    summary = ctl.world.summary()
    summary["gateway"] = state.gateway.stats() if state.gateway is not None else None
    summary["faults"] = state.faults.active()
    summary["invalid_request_guard"] = state.guard.stats()
    return summary


async def add_member(ctl: Control) -> Any:
    """POST /_sandbox/guilds/{guild_id}/members ``{"username", "global_name"?, "nick"?, "roles"?, "status"?}``."""
    guild = ctl.guild()
    body = ctl.body
    username = _str(body, "username", required=True, max_length=32)
    assert username is not None
    if len(username) < 2 or username != username.lower() or ctl.world.username_taken(username):
        raise InvalidFormBody(
            "username", "USERNAME_INVALID", "Username is taken or not a valid username."
        )
    roles = _role_ids(guild, body["roles"]) if "roles" in body else []
    user = ctl.world.create_user(
        username,
        global_name=_str(body, "global_name", max_length=32),
        avatar=_str(body, "avatar", max_length=40),
    )
    member = ctl.world.add_member(
        guild,
        user,
        roles=roles,
        nick=_str(body, "nick", max_length=32),
        status=_status(body) or "online",
    )
    return ctl.world.member_payload(guild, member)


async def update_member(ctl: Control) -> Any:
    """PATCH /_sandbox/guilds/{guild_id}/members/{user_id} ``{"nick"?, "roles"?, "global_name"?, "username"?, "status"?, ...}``.

    Member fields dispatch GUILD_MEMBER_UPDATE; ``status`` dispatches PRESENCE_UPDATE.
    """
    guild = ctl.guild()
    member = guild.members.get(ctl.params["user_id"])
    if member is None:
        raise err.unknown_member()
    body = ctl.body
    changes: dict[str, Any] = {}
    for key, limit in (("nick", 32), ("global_name", 32), ("avatar", 40)):
        if key in body:
            changes[key] = _str(body, key, max_length=limit)
    if "username" in body:
        username = _str(body, "username", required=True, max_length=32)
        assert username is not None
        if username != member.user.username and (
            username != username.lower() or ctl.world.username_taken(username)
        ):
            raise InvalidFormBody(
                "username", "USERNAME_INVALID", "Username is taken or not a valid username."
            )
        changes["username"] = username
    if "roles" in body:
        # Managed roles a member already has (a bot's own role, the booster role) stay.
        kept = [r for r in member.roles if (role := guild.role(r)) is not None and role.managed]
        changes["roles"] = kept + _role_ids(guild, body["roles"])
    for key in ("pending", "deaf", "mute"):
        if key in body:
            if not isinstance(body[key], bool):
                raise InvalidFormBody(key, "BASE_TYPE_BOOLEAN", "Must be either true or false.")
            changes[key] = body[key]
    status = _status(body)
    if not changes and status is None:
        raise InvalidFormBody("", "BASE_TYPE_REQUIRED", "Nothing to change.")
    if changes:
        ctl.world.update_member(guild, member, **changes)
    if status is not None and status != member.status:
        ctl.world.set_presence(guild, member, status)  # a presence, not a member, change on Discord
    return ctl.world.member_payload(guild, member)


async def remove_member(ctl: Control) -> Any:
    """DELETE /_sandbox/guilds/{guild_id}/members/{user_id} (bots cannot be removed)."""
    guild = ctl.guild()
    member = guild.members.get(ctl.params["user_id"])
    if member is None:
        raise err.unknown_member()
    if member.user.bot:
        raise ApiError(400, 0, "The sandbox cannot remove a bot from its guild.")
    ctl.world.remove_member(guild, member)
    return None


async def create_channel(ctl: Control) -> Any:
    """POST /_sandbox/guilds/{guild_id}/channels ``{"name", "type"? ("text"|"voice"|"category"|0|2|4), "parent_id"?, "topic"?}``."""
    guild = ctl.guild()
    body = ctl.body
    name = _str(body, "name", required=True)
    assert name is not None
    raw_type = body.get("type", CHANNEL_TEXT)
    kind = CHANNEL_TYPE_NAMES.get(raw_type, raw_type) if isinstance(raw_type, str) else raw_type
    if (
        not isinstance(kind, int)
        or isinstance(kind, bool)
        or kind not in CHANNEL_TYPE_NAMES.values()
    ):
        raise InvalidFormBody(
            "type", "BASE_TYPE_CHOICES", "Value must be one of text, voice, category (0, 2, 4)."
        )
    parent_id = None
    if body.get("parent_id") is not None:
        parent_id = parse_snowflake(body["parent_id"], "parent_id")
        parent = guild.channel(parent_id)
        if parent is None or parent.type != CHANNEL_CATEGORY or kind == CHANNEL_CATEGORY:
            raise InvalidFormBody("parent_id", "CHANNEL_PARENT_INVALID", "Category does not exist.")
    channel = ctl.world.create_channel(
        guild, name=name, type=kind, parent_id=parent_id, topic=_str(body, "topic", max_length=1024)
    )
    return ctl.world.channel_payload(channel)


async def update_channel(ctl: Control) -> Any:
    """PATCH /_sandbox/channels/{channel_id} ``{"name"?, "topic"?, "nsfw"?, "position"?}``."""
    _, channel = ctl.channel()
    body = ctl.body
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = _str(body, "name", required=True)
    if "topic" in body:
        changes["topic"] = _str(body, "topic", max_length=1024)
    if "nsfw" in body:
        changes["nsfw"] = body["nsfw"] is True
    if "position" in body:
        if isinstance(body["position"], bool) or not isinstance(body["position"], int):
            raise InvalidFormBody("position", "NUMBER_TYPE_COERCE", "Must be an integer.")
        changes["position"] = body["position"]
    if not changes:
        raise InvalidFormBody("", "BASE_TYPE_REQUIRED", "Nothing to change.")
    ctl.world.update_channel(channel, **changes)
    return ctl.world.channel_payload(channel)


async def delete_channel(ctl: Control) -> Any:
    """DELETE /_sandbox/channels/{channel_id}."""
    _, channel = ctl.channel()
    ctl.world.delete_channel(channel)
    return None


def _message_content(body: dict[str, Any], *, required: bool) -> str | None:
    if "content" not in body and not required:
        return None
    content = body.get("content")
    if not isinstance(content, str) or not 1 <= len(content) <= MAX_CONTENT:
        raise InvalidFormBody(
            "content", "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_CONTENT} in length."
        )
    return content


async def post_message(ctl: Control) -> Any:
    """POST /_sandbox/channels/{channel_id}/messages ``{"content", "author_id"? (default: the owner), "reply_to"?}``."""
    guild, channel = ctl.channel()
    if channel.type == CHANNEL_CATEGORY:
        raise err.non_text_channel()
    body = ctl.body
    content = _message_content(body, required=True)
    assert content is not None
    author_id = (
        parse_snowflake(body["author_id"], "author_id")
        if body.get("author_id") is not None
        else guild.owner_id
    )
    member = guild.members.get(author_id)
    if member is None:
        raise err.unknown_member()
    reference = None
    if body.get("reply_to") is not None:
        reference = channel.messages.get(parse_snowflake(body["reply_to"], "reply_to"))
        if reference is None:
            raise err.unknown_message()
    users, roles, everyone = ctl.world.resolve_mentions(guild, content)
    if reference is not None and reference.author.id not in users:
        users.append(reference.author.id)
    message = ctl.world.create_message(
        channel,
        member.user,
        content,
        reference=reference,
        mention_ids=users,
        mention_role_ids=roles,
        mention_everyone=everyone,
    )
    return ctl.world.message_payload(message)


def _message(ctl: Control) -> tuple[Guild, Message]:
    guild, channel = ctl.channel()
    message = channel.messages.get(ctl.params["message_id"])
    if message is None:
        raise err.unknown_message()
    return guild, message


async def edit_message(ctl: Control) -> Any:
    """PATCH /_sandbox/channels/{channel_id}/messages/{message_id} ``{"content"}`` (as its author)."""
    guild, message = _message(ctl)
    content = _message_content(ctl.body, required=True)
    assert content is not None
    users, roles, everyone = ctl.world.resolve_mentions(guild, content)
    ctl.world.edit_message(
        message,
        content=content,
        mention_ids=users,
        mention_role_ids=roles,
        mention_everyone=everyone,
    )
    return ctl.world.message_payload(message)


async def delete_message(ctl: Control) -> Any:
    """DELETE /_sandbox/channels/{channel_id}/messages/{message_id}."""
    _, message = _message(ctl)
    ctl.world.delete_message(message)
    return None


# ==================================================================== sandbox machinery
def _gateway(ctl: Control) -> Any:
    if ctl.state.gateway is None:
        raise ApiError(503, 0, "The sandbox gateway is not available.")
    return ctl.state.gateway


async def gateway_drop(ctl: Control) -> Any:
    """POST /_sandbox/gateway/drop: close every gateway socket abruptly (no close frame)."""
    return {"connections": await _gateway(ctl).drop_all()}


async def gateway_reconnect(ctl: Control) -> Any:
    """POST /_sandbox/gateway/reconnect: send op 7 RECONNECT to every connection."""
    return {"connections": await _gateway(ctl).reconnect_all()}


async def gateway_invalidate(ctl: Control) -> Any:
    """POST /_sandbox/gateway/invalidate: send op 9 INVALID_SESSION to every connection."""
    return {"connections": await _gateway(ctl).invalidate_all()}


async def set_faults(ctl: Control) -> Any:
    """POST /_sandbox/faults ``{"status"?, "count", "path"?, "delay_ms"?, "retry_after"?}`` (count 0 clears)."""
    body = ctl.body
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidFormBody("count", "NUMBER_TYPE_MIN", "count must be an integer >= 0.")
    status = body.get("status")
    if status is not None and status not in FAULT_STATUSES:
        raise InvalidFormBody(
            "status", "BASE_TYPE_CHOICES", f"status must be one of {FAULT_STATUSES} or null."
        )
    delay_ms = body.get("delay_ms", 0)
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or not 0 <= delay_ms <= 600_000:
        raise InvalidFormBody(
            "delay_ms", "NUMBER_TYPE_MAX", "delay_ms must be an integer 0-600000."
        )
    retry_after = body.get("retry_after", 1.0)
    if (
        isinstance(retry_after, bool)
        or not isinstance(retry_after, (int, float))
        or not 0 < retry_after <= 3600
    ):
        raise InvalidFormBody(
            "retry_after", "NUMBER_TYPE_MAX", "retry_after must be a number of seconds 0-3600."
        )
    path = body.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise InvalidFormBody(
            "path", "BASE_TYPE_STRING", "path must be a glob starting with '/', e.g. /channels/*."
        )
    if count and status is None and not delay_ms:
        raise InvalidFormBody(
            "status", "BASE_TYPE_REQUIRED", "A fault needs a status or a delay_ms."
        )
    ctl.state.faults.add(
        Fault(
            status=status,
            remaining=count,
            path=path,
            delay_ms=delay_ms,
            retry_after=float(retry_after),
        )
    )
    return {"faults": ctl.state.faults.active()}


async def list_faults(ctl: Control) -> Any:
    """GET /_sandbox/faults."""
    return {"faults": ctl.state.faults.active()}


async def clear_faults(ctl: Control) -> Any:
    """DELETE /_sandbox/faults."""
    ctl.state.faults.clear()
    return {"faults": []}


async def revoke_token(ctl: Control) -> Any:
    """POST /_sandbox/tokens/{token}/revoke: REST answers 401, the bot's gateway sockets close with 4004."""
    bot = ctl.world.bot_by_token_any(ctl.params["token"])
    if bot is None:
        raise ApiError(404, 0, "Unknown token.")
    if not bot.revoked:
        ctl.world.revoke_token(bot)
    return {"bot_id": str(bot.id), "revoked": True}


async def reset_limits(ctl: Control) -> Any:
    """POST /_sandbox/ratelimits/reset: empty every rate-limit bucket and lift invalid-request bans."""
    ctl.state.ratelimits.reset()
    ctl.state.guard.reset()
    return {"reset": True}


ROUTES = RouteTable(
    [
        Route("GET", "/state", state_summary),
        Route("POST", "/guilds/{guild_id}/members", add_member),
        Route("PATCH", "/guilds/{guild_id}/members/{user_id}", update_member),
        Route("DELETE", "/guilds/{guild_id}/members/{user_id}", remove_member),
        Route("POST", "/guilds/{guild_id}/channels", create_channel),
        Route("PATCH", "/channels/{channel_id}", update_channel),
        Route("DELETE", "/channels/{channel_id}", delete_channel),
        Route("POST", "/channels/{channel_id}/messages", post_message),
        Route("PATCH", "/channels/{channel_id}/messages/{message_id}", edit_message),
        Route("DELETE", "/channels/{channel_id}/messages/{message_id}", delete_message),
        Route("POST", "/gateway/drop", gateway_drop),
        Route("POST", "/gateway/reconnect", gateway_reconnect),
        Route("POST", "/gateway/invalidate", gateway_invalidate),
        Route("GET", "/faults", list_faults),
        Route("POST", "/faults", set_faults),
        Route("DELETE", "/faults", clear_faults),
        Route("POST", "/tokens/{token}/revoke", revoke_token),
        Route("POST", "/ratelimits/reset", reset_limits),
    ]
)


async def handle_control(request: web.Request) -> web.StreamResponse:
    """Answer one ``/_sandbox/...`` request."""
    state = request.app[STATE]
    try:
        route, params = ROUTES.match(request.method, "/" + request.match_info["tail"])
        raw = await request.read()
        body = decode_json(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise InvalidFormBody(
                "", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
            )
        result = await route.handler(
            Control(request=request, state=state, params=params, body=body)
        )
    except ApiError as exc:
        return exc.response()
    except ValueError as exc:  # a world rule (e.g. a username clash) the checks above did not catch
        return ApiError(400, 0, str(exc)).response()
    except Exception:
        _log.exception("sandbox control %s %s failed", request.method, request.path)
        return err.server_error(500).response()
    if result is None:
        return web.Response(status=204)
    return json_response(result)
