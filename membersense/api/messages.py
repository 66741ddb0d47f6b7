"""``/api/messages``: a channel's recent messages, and the bot's own messages sent, edited
and deleted."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, jsonify, request

from membersense.api.params import (
    bool_field,
    guild_arg,
    int_arg,
    json_object,
    required_snowflake_arg,
    snowflake_arg,
    snowflake_field,
    snowflake_path,
)
from membersense.bulkhead import bulkhead
from membersense.discord.outgoing import MAX_CONTENT
from membersense.errors import BadRequest
from membersense.extensions import bots, sessions

bp = Blueprint("messages", __name__, url_prefix="/api")

#: What an ``Idempotency-Key`` may be: printable ASCII, as in the IETF draft's examples.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: Largest page of ``limit`` (Discord's own), also the default.
MAX_PAGE = 100
#: The cursors, of which a request may give at most one.
CURSORS = ("before", "after", "around")


@bp.get("/messages")
@bulkhead("history")
def list_messages() -> Any:
    """Messages of ``channelId``, newest first.

    ``limit`` is 1–100 (default 100, as the original); at most one of
    ``before``, ``after`` or ``around`` (message ids) picks the page.
    """
    session = sessions.authenticate()
    channel_id = required_snowflake_arg("channelId", "Channel ID is required")
    guild_id = guild_arg(session)
    limit = int_arg("limit", default=MAX_PAGE, minimum=1, maximum=MAX_PAGE)
    cursors = {name: snowflake_arg(name) for name in CURSORS}
    given = {name: value for name, value in cursors.items() if value is not None}
    if len(given) > 1:
        raise BadRequest("Use at most one of before, after and around")
    messages = bots.service.messages(
        session.fingerprint, guild_id, channel_id, limit=limit, **given
    )
    return jsonify(messages)


def _content(payload: dict[str, Any]) -> str:
    content = payload.get("content")
    # Discord trims a message: one of only spaces would be empty.
    if not isinstance(content, str) or not content.strip() or len(content) > MAX_CONTENT:
        raise BadRequest(f"content must be text of 1 to {MAX_CONTENT} characters")
    return content


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


@bp.post("/messages")
@bulkhead("send")
def send_message() -> Any:
    """Post ``content`` in ``channelId`` as the bot: 201 with the message.

    ``replyTo`` (a message id of the channel) makes it a reply; mentions ping
    no one unless ``allowMentions`` is true. A request repeated with the same
    ``Idempotency-Key`` within a few minutes answers with the message already
    posted instead of posting it twice.
    """
    session = sessions.authenticate()
    payload = json_object()
    channel_id = snowflake_field(payload, "channelId", missing_message="Channel ID is required")
    assert channel_id is not None
    content = _content(payload)
    reply_to = snowflake_field(payload, "replyTo")
    allow_mentions = bool_field(payload, "allowMentions")
    key = _idempotency_key()
    message = bots.service.send_message(
        session.fingerprint,
        guild_arg(session),
        channel_id,
        content,
        reply_to=reply_to,
        allow_mentions=allow_mentions,
        idempotency_key=key,
    )
    return jsonify(message), 201


@bp.patch("/messages/<message_id>")
@bulkhead("send")
def edit_message(message_id: str) -> Any:
    """Replace the ``content`` of one of the bot's messages in ``channelId``."""
    session = sessions.authenticate()
    channel_id = required_snowflake_arg("channelId", "Channel ID is required")
    target = snowflake_path("message id", message_id)
    payload = json_object()
    content = _content(payload)
    allow_mentions = bool_field(payload, "allowMentions")
    message = bots.service.edit_message(
        session.fingerprint,
        guild_arg(session),
        channel_id,
        target,
        content,
        allow_mentions=allow_mentions,
    )
    return jsonify(message)


@bp.delete("/messages/<message_id>")
@bulkhead("send")
def delete_message(message_id: str) -> Any:
    """Delete a message of ``channelId``: 204."""
    session = sessions.authenticate()
    channel_id = required_snowflake_arg("channelId", "Channel ID is required")
    target = snowflake_path("message id", message_id)
    bots.service.delete_message(session.fingerprint, guild_arg(session), channel_id, target)
    return "", 204
