"""``GET /api/members``: the guild's members with their roles."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from membersense.api.params import guild_arg, int_arg, snowflake_arg
from membersense.extensions import bots, sessions

bp = Blueprint("members", __name__, url_prefix="/api")

#: Largest page of ``limit``.
MAX_PAGE = 1000


@bp.get("/members")
def list_members() -> Response:
    """Members of the session's guild (or ``guildId``), ordered by user id.

    ``limit`` (1–1000) and ``after`` (a user id) page through the list;
    without them the whole list is returned, as the original did. The body is
    served from the session's cache with an ``ETag``; ``If-None-Match`` gets
    a 304 while nothing changed.
    """
    session = sessions.authenticate()
    guild_id = guild_arg(session)
    limit = int_arg("limit", default=None, minimum=1, maximum=MAX_PAGE)
    after = snowflake_arg("after")
    document = bots.service.members(session.fingerprint, guild_id, limit=limit, after=after)
    gzipped = document.gzip is not None and request.accept_encodings["gzip"] > 0
    # Each content coding is its own representation, with its own strong validator.
    etag = f"{document.etag}.gz" if gzipped else document.etag
    headers = {"ETag": f'"{etag}"', "Vary": "Accept-Encoding"}
    # If-None-Match compares weakly (RFC 9110): a proxy that re-encodes marks it W/.
    if request.if_none_match.contains_weak(etag):
        return current_app.response_class(status=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        return current_app.response_class(
            document.gzip, mimetype="application/json", headers=headers
        )
    # Large lists keep only their gzip copy: inflated piece by piece as it is sent.
    body = document.body if document.body is not None else document.chunks()
    return current_app.response_class(body, mimetype="application/json", headers=headers)
