"""``GET /api/channels``: the guild's channels."""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, jsonify

from membersense.api.params import choice_arg, guild_arg
from membersense.discord.service import ChannelKind
from membersense.extensions import bots, sessions

bp = Blueprint("channels", __name__, url_prefix="/api")

CHANNEL_KINDS = ("text", "voice", "category", "all")


@bp.get("/channels")
def list_channels() -> Any:
    """Text channels of the session's guild (``type`` picks voice, category or all)."""
    session = sessions.authenticate()
    guild_id = guild_arg(session)
    kind = cast(ChannelKind, choice_arg("type", CHANNEL_KINDS, default="text"))  # one of them
    return jsonify(bots.service.channels(session.fingerprint, guild_id, kind=kind))
