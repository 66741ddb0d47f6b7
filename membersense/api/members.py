"""``GET /api/members``: the guild's members with their roles."""

from __future__ import annotations

from flask import Blueprint, Request, Response, current_app, request

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
    req = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
    gzipped = document.gzip is not None and _accepts_gzip(req)
    # Each content coding is its own representation, with its own strong validator.
    etag = f"{document.etag}.gz" if gzipped else document.etag
    headers = [("ETag", f'"{etag}"'), ("Vary", "Accept-Encoding")]
    # If-None-Match compares weakly (RFC 9110): a proxy that re-encodes marks it W/.
    if "HTTP_IF_NONE_MATCH" in req.environ and req.if_none_match.contains_weak(etag):
        return current_app.response_class(status=304, headers=headers)
    if gzipped:
        headers.append(("Content-Encoding", "gzip"))
        return current_app.response_class(
            document.gzip, headers=headers, content_type="application/json"
        )
    # Large lists keep only their gzip copy: inflated piece by piece as it is sent.
    body = document.body if document.body is not None else document.chunks()
    return current_app.response_class(body, headers=headers, content_type="application/json")


def _accepts_gzip(req: Request) -> bool:
    # Most clients send a plain list ("gzip, deflate, br"): read that without parsing it
    # into werkzeug's Accept object, about a twentieth of a cached request. Weights go the
    # long way.
    value = req.environ.get("HTTP_ACCEPT_ENCODING", "")
    if ";" in value:
        return req.accept_encodings["gzip"] > 0
    return any(coding.strip().lower() in ("gzip", "*") for coding in value.split(","))
