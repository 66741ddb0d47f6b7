"""``GET /api/messages``: a channel's recent messages."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from membersense.api.params import int_arg, required_snowflake_arg, snowflake_arg
from membersense.bulkhead import bulkhead
from membersense.errors import BadRequest
from membersense.extensions import sessions

bp = Blueprint("messages", __name__, url_prefix="/api")


@bp.get("/messages")
@bulkhead("history")
def list_messages() -> Any:
    """Messages of ``channelId``, newest first.

    ``limit`` is 1–100 (default 100, as the original); at most one of
    ``before``, ``after`` or ``around`` (message ids) picks the page.
    """
    session = sessions.authenticate()
    channel_id = required_snowflake_arg("channelId", "Channel ID is required")
    guild_id = snowflake_arg("guildId")
    limit = int_arg("limit", default=100, minimum=1, maximum=100)
    cursors = {name: snowflake_arg(name) for name in ("before", "after", "around")}
    given = {name: value for name, value in cursors.items() if value is not None}
    if len(given) > 1:
        raise BadRequest("Use at most one of before, after and around")
    messages = session.service.messages(guild_id, channel_id, limit=limit, **given)
    return jsonify(messages)
