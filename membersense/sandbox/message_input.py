"""Reading and validating the body of a message request (POST / PATCH of a message), as Discord does.

Each reader returns the checked value or raises Discord's 400 answer: 50035 ``Invalid Form
Body`` naming the field (``content``, ``embeds.1.title``, ...) or 50109 for broken JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from membersense.sandbox import responses as err
from membersense.sandbox.models import Channel, Message
from membersense.sandbox.responses import InvalidFormBody
from membersense.sandbox.world import World

MAX_CONTENT = 2000
MAX_EMBEDS = 10
#: Message flags a bot may set when sending or editing (SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS).
SETTABLE_MESSAGE_FLAGS = (1 << 2) | (1 << 12)
_ALLOWED_MENTION_TYPES = ("everyone", "roles", "users")


def parse_snowflake(raw: Any, where: str) -> int:
    """A snowflake given as string or int (Discord's 50035 NUMBER_TYPE_COERCE otherwise)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**64:
        return raw
    if isinstance(raw, str) and raw.isdigit() and int(raw) < 2**64:
        return int(raw)
    raise InvalidFormBody(where, "NUMBER_TYPE_COERCE", f'Value "{raw}" is not snowflake.')


@dataclass
class Upload:
    """A file part of a multipart message request (its bytes are not kept)."""

    filename: str
    content_type: str | None
    size: int


async def read_body(request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
    """The JSON body (or multipart ``payload_json`` plus ``files[n]``) of a message request."""
    uploads: list[Upload] = []
    if request.content_type == "multipart/form-data":
        payload: Any = {}
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):  # a nested multipart: Discord ignores it
                continue
            data = await part.read(decode=False)
            name = part.name or ""
            if name == "payload_json":
                payload = decode_json(bytes(data))
            elif name.startswith("files[") or name == "file":
                uploads.append(
                    Upload(part.filename or "file", part.headers.get("Content-Type"), len(data))
                )
    else:
        raw = await request.read()
        payload = decode_json(raw) if raw.strip() else {}
    if not isinstance(payload, dict):
        raise InvalidFormBody(
            "", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
        )
    return payload, uploads


def decode_json(raw: bytes) -> Any:
    """Decoded JSON, or Discord's 50109 answer."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise err.invalid_json() from None


def content(body: dict[str, Any]) -> str | None:
    """``content``: a string of at most 2000 characters, or None."""
    content = body.get("content")
    if content is None:
        return None
    if not isinstance(content, str):
        raise InvalidFormBody(
            "content", "BASE_TYPE_STRING", f'Could not interpret "{content}" as string.'
        )
    if len(content) > MAX_CONTENT:
        raise InvalidFormBody(
            "content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
        )
    return content


def _string(value: Any, path: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise InvalidFormBody(path, "BASE_TYPE_STRING", f'Could not interpret "{value}" as string.')
    if len(value) > max_length:
        raise InvalidFormBody(
            path, "BASE_TYPE_MAX_LENGTH", f"Must be {max_length} or fewer in length."
        )
    return value


def _url(value: Any, path: str) -> str:
    text = _string(value, path, 2048)
    if not text.startswith(("http://", "https://", "attachment://")):
        raise InvalidFormBody(path, "URL_TYPE_INVALID_URL", "Not a well formed URL.")
    return text


def embed(raw: Any, path: str) -> dict[str, Any]:
    """A rich embed as Discord stores it (known fields only, validated)."""
    if not isinstance(raw, dict):
        raise InvalidFormBody(
            path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
        )
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
            raise InvalidFormBody(
                f"{path}.color",
                "NUMBER_TYPE_MAX",
                "int value should be less than or equal to 16777215.",
            )
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
            raise InvalidFormBody(
                f"{path}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
            )
        embed["fields"] = []
        for i, item in enumerate(fields):
            if not isinstance(item, dict):
                raise InvalidFormBody(
                    f"{path}.fields.{i}",
                    "DICT_TYPE_CONVERT",
                    "Only dictionaries may be used in a DictType",
                )
            embed["fields"].append(
                {
                    "name": _string(item.get("name"), f"{path}.fields.{i}.name", 256),
                    "value": _string(item.get("value"), f"{path}.fields.{i}.value", 1024),
                    "inline": bool(item.get("inline", False)),
                }
            )
    return embed


def embeds(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``embeds`` (or the legacy ``embed``): at most 10 rich embeds, or None when absent."""
    raw = body.get("embeds")
    if raw is None and body.get("embed") is not None:  # the pre-v8 single-embed field
        raw = [body["embed"]]
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidFormBody("embeds", "BASE_TYPE_LIST", "Must be an array.")
    if len(raw) > MAX_EMBEDS:
        raise InvalidFormBody(
            "embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length."
        )
    return [embed(e, f"embeds.{i}") for i, e in enumerate(raw)]


def allowed_mentions(body: dict[str, Any]) -> dict[str, Any] | None:
    """``allowed_mentions`` checked and normalised (``parse``, ``users``, ``roles``, ``replied_user``), or None."""
    raw = body.get("allowed_mentions")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidFormBody(
            "allowed_mentions", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
        )
    parse = raw.get("parse", [])
    if not isinstance(parse, list):
        raise InvalidFormBody("allowed_mentions.parse", "BASE_TYPE_LIST", "Must be an array.")
    for i, kind in enumerate(parse):
        if kind not in _ALLOWED_MENTION_TYPES:
            raise InvalidFormBody(
                f"allowed_mentions.parse.{i}",
                "BASE_TYPE_CHOICES",
                "Value must be one of ('everyone', 'roles', 'users').",
            )
    checked: dict[str, Any] = {
        "parse": list(parse),
        "replied_user": raw.get("replied_user") is True,
    }
    for kind in ("users", "roles"):
        ids = raw.get(kind, [])
        if not isinstance(ids, list):
            raise InvalidFormBody(f"allowed_mentions.{kind}", "BASE_TYPE_LIST", "Must be an array.")
        if len(ids) > 100:
            raise InvalidFormBody(
                f"allowed_mentions.{kind}",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 100 or fewer in length.",
            )
        checked[kind] = [
            parse_snowflake(v, f"allowed_mentions.{kind}.{i}") for i, v in enumerate(ids)
        ]
        if checked[kind] and kind in parse:
            raise InvalidFormBody(
                "allowed_mentions",
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
            )
    return checked


def reference(body: dict[str, Any], channel: Channel) -> Message | None:
    """The message ``message_reference`` replies to (None: no reply, or a missing one with fail_if_not_exists false)."""
    raw = body.get("message_reference")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidFormBody(
            "message_reference", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
        )
    if raw.get("message_id") is None:
        raise InvalidFormBody(
            "message_reference.message_id", "BASE_TYPE_REQUIRED", "This field is required"
        )
    message_id = parse_snowflake(raw["message_id"], "message_reference.message_id")
    fail = raw.get("fail_if_not_exists", True)
    if (
        raw.get("channel_id") is not None
        and parse_snowflake(raw["channel_id"], "message_reference.channel_id") != channel.id
    ):
        raise InvalidFormBody(
            "message_reference",
            "REPLIES_CANNOT_REFERENCE_OTHER_CHANNEL",
            "Cannot reply to a message in a different channel",
        )
    referenced = channel.messages.get(message_id)
    if referenced is None and fail is not False:
        raise InvalidFormBody("message_reference", "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
    return referenced


def flags(body: dict[str, Any]) -> int | None:
    """``flags`` reduced to the bits a bot may set, or None."""
    flags = body.get("flags")
    if flags is None:
        return None
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise InvalidFormBody("flags", "NUMBER_TYPE_COERCE", f'Value "{flags}" is not int.')
    return flags & SETTABLE_MESSAGE_FLAGS


def nonce(body: dict[str, Any]) -> int | str | None:
    """``nonce``: an int64 or a string of at most 25 characters, or None."""
    nonce = body.get("nonce")
    if nonce is None:
        return None
    if isinstance(nonce, str) and len(nonce) <= 25:
        return nonce
    if isinstance(nonce, int) and not isinstance(nonce, bool) and -(2**63) <= nonce < 2**63:
        return nonce
    raise InvalidFormBody("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")


def enforce_nonce(body: dict[str, Any]) -> bool:
    """``enforce_nonce``: whether a repeated ``nonce`` returns the earlier message instead of a new one."""
    value = body.get("enforce_nonce")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidFormBody("enforce_nonce", "BASE_TYPE_BOOLEAN", "Must be either true or false.")
    return value


def attachments(
    uploads: list[Upload], body: dict[str, Any], world: World, channel: Channel
) -> list[dict[str, Any]]:
    """Attachment objects for uploaded files (``attachments[].description`` from the body is kept)."""
    meta: list[Any] = body["attachments"] if isinstance(body.get("attachments"), list) else []
    attachments = []
    for index, upload in enumerate(uploads):
        attachment_id = world.snowflakes.next()
        # url and proxy_url are added as the message is served (they name the sandbox's CDN).
        item: dict[str, Any] = {
            "id": str(attachment_id),
            "filename": upload.filename,
            "size": upload.size,
        }
        if upload.content_type:
            item["content_type"] = upload.content_type
        described = next(
            (m for m in meta if isinstance(m, dict) and str(m.get("id")) == str(index)), None
        )
        if described is not None and isinstance(described.get("description"), str):
            item["description"] = described["description"][:1024]
        attachments.append(item)
    return attachments
