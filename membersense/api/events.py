"""``/api/events``: the session guild's events as they happen.

- ``GET /api/events``: a Server-Sent Events stream (``Last-Event-ID`` resumes it).
- ``GET /api/events/poll?after=&wait=``: the same events as JSON, for clients
  and hosts that cannot hold a stream.
- ``POST /api/events/ticket``: a one-time ticket to open a stream with
  ``?ticket=`` (browsers' ``EventSource`` cannot send ``Authorization``).

See :mod:`membersense.events.live` for how streams behave.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from membersense.api.params import guild_arg, int_arg, query_arg
from membersense.bus import topic_of
from membersense.discord.errors import GuildNotFound
from membersense.errors import BadRequest, Unauthorized
from membersense.events.live import LiveEvents
from membersense.events.tickets import TICKET_TTL_S
from membersense.extensions import bots, sessions
from membersense.response_policy import CREDENTIAL_CACHE_CONTROL
from membersense.runtime import runtime_of
from membersense.sessions import SessionRecord

bp = Blueprint("events", __name__, url_prefix="/api/events")

#: The longest a long-poll may wait, in seconds (under common proxy and platform timeouts).
MAX_POLL_WAIT_S = 25
#: The most events a long-poll answers with (also the default).
MAX_POLL_LIMIT = 100
#: What an event id may look like: the bus's are short; anything else is refused unread.
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,100}")
#: The response header that carries the id to poll after next.
CURSOR_HEADER = "X-Event-Cursor"


def _live() -> LiveEvents:
    return runtime_of(current_app).live


def session_topic(session: SessionRecord) -> tuple[int, str]:
    """The guild a request names (``guildId``, else the session's default) and its event
    topic; 404 when the session's bot is not in that guild."""
    guild_id = guild_arg(session)
    if str(guild_id) not in {guild.id for guild in bots.service.guilds(session.fingerprint)}:
        raise GuildNotFound()
    return guild_id, topic_of(session.fingerprint, guild_id)


def _event_id(name: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _EVENT_ID.fullmatch(value):
        raise BadRequest(f"{name} must be an event id this API sent")
    return value


def _stream_session() -> SessionRecord:
    # Authorization as everywhere, or a ticket: EventSource cannot send headers.
    ticket = query_arg("ticket")
    if request.headers.get("Authorization") or ticket is None:
        return sessions.authenticate()
    session_id = _live().tickets.redeem(ticket)
    record = sessions.manager.authenticate(session_id) if session_id is not None else None
    if record is None:
        raise Unauthorized("Invalid or expired ticket")
    g.session = record
    return record


@bp.post("/ticket")
def ticket() -> Any:
    """A ticket that opens one stream of this session within 60 seconds: 201."""
    session = sessions.authenticate()
    value = _live().tickets.issue(session.id)
    # A ticket opens the session's events: a credential, kept by no cache.
    return (
        {"ticket": value, "expiresIn": int(TICKET_TTL_S)},
        201,
        {"Cache-Control": CREDENTIAL_CACHE_CONTROL},
    )


@bp.get("")
def stream() -> Response:
    """The session guild's events as Server-Sent Events (see the module docstring)."""
    session = _stream_session()
    _, topic = session_topic(session)
    live = _live()
    after = _event_id(
        "Last-Event-ID", request.headers.get("Last-Event-ID") or query_arg("lastEventId")
    ) or live.bus.cursor(topic)
    reader = live.open_reader(session.id)
    manager, session_id = sessions.manager, session.id
    body = live.stream(reader, topic, after, refresh=lambda: manager.authenticate(session_id))
    response = current_app.response_class(
        body,
        mimetype="text/event-stream",
        headers={
            # Not cached, not buffered by nginx, not compressed (which would hold frames back).
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
    response.call_on_close(reader.close)
    return response


@bp.get("/poll")
def poll() -> Any:
    """Events after ``after`` as a JSON array, at once or within ``wait`` seconds (0–25);
    ``{"reset": true, "cursor"}`` when ``after`` can no longer be continued from."""
    session = sessions.authenticate()
    _, topic = session_topic(session)
    live = _live()
    after = _event_id("after", query_arg("after")) or live.bus.cursor(topic)
    wait = int_arg("wait", default=0, minimum=0, maximum=MAX_POLL_WAIT_S)
    limit = int_arg("limit", default=MAX_POLL_LIMIT, minimum=1, maximum=MAX_POLL_LIMIT)
    batch = live.poll(session.id, topic, after, wait=wait, limit=limit)
    body = (
        {"reset": True, "cursor": batch.cursor}
        if batch.reset
        else [event.to_json() for event in batch.events]
    )
    response = jsonify(body)
    response.headers[CURSOR_HEADER] = batch.cursor
    return response
