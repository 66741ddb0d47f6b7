"""``POST /api/auth/login`` and ``POST /api/auth/logout``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request

from membersense.api.params import json_body
from membersense.bulkhead import bulkhead
from membersense.errors import BadRequest, Unauthorized
from membersense.extensions import sessions

bp = Blueprint("auth", __name__, url_prefix="/api/auth")

# Discord tokens are a few dozen URL-safe characters; anything else can never
# log in, and must not reach an HTTP header.
_MAX_TOKEN_LENGTH = 256


def _token_from_body() -> str:
    payload = json_body()
    if not isinstance(payload, dict):
        raise BadRequest("Invalid JSON payload")
    token = payload.get("token")
    if not isinstance(token, str) or not token.strip():
        raise BadRequest("Token is required")
    token = token.strip()
    if token[:4].lower() == "bot ":  # pasted with discord.py's header prefix
        token = token[4:].strip()
    if (
        not token
        or len(token) > _MAX_TOKEN_LENGTH
        or not token.isascii()
        or not token.isprintable()
        or " " in token
    ):
        raise Unauthorized("Invalid Discord token")
    return token


@bp.post("/login")
@bulkhead("login")
def login() -> dict[str, Any]:
    """Log a bot token in and open a session.

    The answer keeps the original's fields (``sessionId``, ``message``,
    ``serverName``, ``memberCount``, ``iconURL``) for the login's guild, plus
    ``guildId`` and, for a bot in several guilds, ``guilds``.
    """
    token = _token_from_body()
    session, bot = sessions.manager.login(token, request.remote_addr)
    g.session = session
    guilds = bot.guilds
    primary = guilds[0]
    body: dict[str, Any] = {
        "sessionId": session.id,
        "message": "Logged in successfully",
        "serverName": primary.name,
        "memberCount": primary.member_count,
        "iconURL": primary.icon_url,
        "guildId": primary.id,
    }
    if len(guilds) > 1:
        body["guilds"] = [{"id": guild.id, "name": guild.name} for guild in guilds]
    return body


@bp.post("/logout")
def logout() -> dict[str, str]:
    """End the caller's session and release its Discord connection."""
    session = sessions.authenticate()
    sessions.manager.logout(session.id)
    return {"message": "Logged out successfully"}
