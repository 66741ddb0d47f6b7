"""The API's contract: an OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

Built here in Python rather than kept as a static JSON file, for three reasons:
the same parameter bounds and choices as the views (imported from them, so
they cannot drift apart); the parts every operation shares (the JSON error
body, ``X-Request-ID``, the rate-limit headers, ``Retry-After`` on 429/503)
written once by small helpers instead of repeated by hand in a few thousand
lines of JSON; and a document that describes this server as configured
(``/metrics`` appears only when it is served, with the security it has).

``tests/contract.py`` checks every response the test suite sees against this
document, and a test keeps its paths equal to the routes the app registers;
the fuzz test (schemathesis) generates requests from it.
"""

from __future__ import annotations

import copy
import functools
from importlib import metadata
from typing import Any

from membersense.api import events as events_api
from membersense.api import members as members_api
from membersense.api import messages as messages_api
from membersense.api.channels import CHANNEL_KINDS
from membersense.bus import EVENT_TYPES
from membersense.config import Settings
from membersense.discord.outgoing import MAX_CONTENT
from membersense.events.tickets import TICKET_TTL_S
from membersense.webhooks.addresses import MAX_URL_LENGTH

__all__ = ["build_document"]

Json = dict[str, Any]

_SNOWFLAKE = {
    "type": "string",
    "pattern": "^[0-9]{1,19}$",
    "description": "A Discord id (a snowflake), as a decimal string.",
    "examples": ["1180000000000000456"],
}

_DESCRIPTION = """\
A self-hosted REST gateway to a Discord bot's guild data. Log in with the bot's token,
then send the session id in `Authorization` (bare, or as `Bearer <sessionId>`).

**Errors** are always JSON, `{"error": "<message>"}`, with the statuses each operation
lists. 429 and 503 add `retryAfter` (seconds) to the body and a `Retry-After` header.
A path that is not listed here answers 404 `{"error": "Not Found"}`; a listed path with
another method 405 `{"error": "Method Not Allowed"}` with `Allow`. Any operation may
answer 500 `{"error": "Internal Server Error"}`: that is a bug, and never carries its
cause; and 503, when memory mode runs under a server with several processes (a
deployment to fix).

**Sessions** end with a logout, after SESSION_TIMEOUT idle, or when their bot's
connection fails for good: from then on, every operation of that session answers 401,
one already under way too. In Redis mode (`REDIS_URL`), every operation that needs the
session store (every one with a session, and login) answers 503 `Session store
unavailable` with `Retry-After` while Redis cannot be reached.

**Events** (`GET /api/events` as Server-Sent Events, `GET /api/events/poll` as JSON, and
webhook deliveries, described under `webhooks`) all carry the `Event` schema's events:
each event's `data` has the shape the REST endpoints give the same object.

**Every response** carries `X-Request-ID` (the client's own when it sends a sane one).
Operations with the `RateLimit-*` headers share one sliding-window budget per client
address. `HEAD` is answered for every `GET`, and `OPTIONS` answers CORS preflights.
"""


def _version() -> str:
    try:
        return metadata.version("membersense")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0"


# -- shared pieces ------------------------------------------------------------------


def _header_ref(name: str, required: bool = True) -> Json:
    ref: Json = {"$ref": f"#/components/headers/{name}"}
    if not required:
        # A $ref may not be combined with `required`; say it through the component.
        return {"$ref": f"#/components/headers/{name}Optional"}
    return ref


_RATE_LIMIT_HEADERS = (
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
)


def _headers(
    *,
    rate_limited: bool,
    retry_after: bool = False,
    rate_limit_known: bool = True,
    extra: Json | None = None,
) -> Json:
    headers: Json = {"X-Request-ID": _header_ref("X-Request-ID")}
    if rate_limited:
        for name in _RATE_LIMIT_HEADERS:
            headers[name] = _header_ref(name, required=rate_limit_known)
    if retry_after:
        headers["Retry-After"] = _header_ref("Retry-After")
    headers.update(extra or {})
    return headers


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _ok(
    description: str,
    schema: Json,
    *,
    rate_limited: bool,
    links: Json | None = None,
    extra_headers: Json | None = None,
) -> Json:
    response: Json = {
        "description": description,
        "headers": _headers(rate_limited=rate_limited, extra=extra_headers),
        "content": _json(schema),
    }
    if links:
        response["links"] = links
    return response


_ERROR_TEXT = {
    400: "Bad input: the message says which parameter and what it accepts.",
    401: "Missing, unknown or expired session, or one that ended meanwhile (`Unauthorized`).",
    403: "The bot may not do this.",
    404: "It does not exist for this bot.",
    413: "The body is over MAX_CONTENT_LENGTH (`Request Entity Too Large`).",
    429: "Too many requests from this address (`Too many requests`).",
    500: "A bug (`Internal Server Error`); never carries its cause.",
    502: "Discord answered with a server error, or could not be reached.",
    504: "Discord did not answer in time.",
}


#: The 503 every operation may answer: memory mode misdeployed (see membersense.processes).
_SEVERAL_PROCESSES = (
    "Memory mode under a WSGI server that runs several processes answers every request 503 "
    "(`MemberSense keeps sessions in process memory and this server runs several processes: "
    "…`), before the rate limit counts it: a deployment to fix (one process, or REDIS_URL)."
)


def _errors(*statuses: int, rate_limited: bool, texts: dict[int, str] | None = None) -> Json:
    """The error responses *statuses*, plus the two any operation may answer: 503 (a
    misdeployment, :data:`_SEVERAL_PROCESSES`) and 500 (a bug)."""
    texts = texts or {}
    responses: Json = {}
    for status in dict.fromkeys((*statuses, 503, 500)):
        retry = status in (429, 503)
        if status == 503:
            description = " ".join(filter(None, (texts.get(503), _SEVERAL_PROCESSES)))
        else:
            description = texts.get(status) or _ERROR_TEXT[status]
        responses[str(status)] = {
            "description": description,
            # A bug, or the refusal of several processes, may come before the rate limit
            # has counted the request.
            "headers": _headers(
                rate_limited=rate_limited,
                retry_after=retry,
                rate_limit_known=status not in (500, 503),
            ),
            "content": _json(
                {"$ref": "#/components/schemas/" + ("RetryableError" if retry else "Error")}
            ),
        }
    return responses


# Why a 503, in the words of its `error` (a few depend on the mode or the settings).
_SHUTTING_DOWN = "`Server is shutting down`"
_STORE_DOWN = "Redis mode: `Session store unavailable`, while Redis cannot be reached"
_RECONNECTING = (
    "Redis mode: `The bot is reconnecting to Discord; try again shortly`, while "
    "another process takes the bot's connection over"
)
_DISCORD_NOT_NOW = (
    "Discord rate limiting the bot, or MemberSense holding calls to Discord back "
    "to stay out of its invalid-request ban"
)
_STREAMS_FULL = (
    "`Too many event streams are open; try again shortly`: MAX_EVENT_STREAMS "
    "streams and waiting long-polls are open in this process"
)


def _unavailable(*reasons: str) -> str:
    return "Not now, retry after `Retry-After`: " + "; ".join(reasons) + "."


#: Why a message operation may answer 503.
_MESSAGES_UNAVAILABLE = _unavailable(_DISCORD_NOT_NOW, _RECONNECTING, _SHUTTING_DOWN, _STORE_DOWN)


def _too_many(*reasons: str) -> str:
    return "; ".join(("`Too many requests` from this address (the rate limit)", *reasons)) + "."


def _any_case(choices: tuple[str, ...], *, default: str) -> Json:
    # JSON Schema patterns have no case-insensitive flag: spell each letter both ways.
    spelled = (
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in choice)
        for choice in choices
    )
    return {
        "type": "string",
        "pattern": f"^(?:{'|'.join(spelled)})$",
        "default": default,
        "examples": list(choices),
    }


def _query(name: str, schema: Json, description: str, *, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


_GUILD_ID = _query(
    "guildId",
    {"$ref": "#/components/schemas/Snowflake"},
    "The guild (one of the login's `guilds`); default: the login's guild.",
)
_REQUEST_ID = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Your id for this request, echoed back when it is 1–128 "
    "printable ASCII characters (else one is made up).",
    "schema": {"type": "string"},
}
_SESSION: list[Json] = [{"session": []}]


def _body(schema: str) -> Json:
    return {"required": True, "content": _json({"$ref": f"#/components/schemas/{schema}"})}


def _no_content(description: str) -> Json:
    return {"description": description, "headers": _headers(rate_limited=True)}


def _session_link(operation_id: str, **parameters: str) -> Json:
    return {
        "operationId": operation_id,
        "parameters": {"header.Authorization": "$response.body#/sessionId", **parameters},
    }


# -- operations ---------------------------------------------------------------------


def _auth_paths() -> Json:
    login_links = {
        "ListMembers": _session_link("listMembers"),
        "ListChannels": _session_link("listChannels"),
        "Logout": _session_link("logout"),
    }
    return {
        "/api/auth/login": {
            "post": {
                "operationId": "login",
                "tags": ["auth"],
                "summary": "Log a bot token in",
                "description": "Opens a session for the bot. Logging the same token in twice "
                "shares one gateway connection; the last session to end closes it.",
                "security": [],
                "parameters": [_REQUEST_ID],
                "requestBody": {
                    "required": True,
                    "content": _json({"$ref": "#/components/schemas/LoginRequest"}),
                },
                "responses": {
                    "200": _ok(
                        "Logged in.",
                        {"$ref": "#/components/schemas/LoginResponse"},
                        rate_limited=True,
                        links=login_links,
                    ),
                    **_errors(
                        400,
                        401,
                        413,
                        429,
                        502,
                        503,
                        504,
                        rate_limited=True,
                        texts={
                            400: "`Invalid JSON payload`, `Token is required`, a privileged intent "
                            "the bot lacks (named), or a bot in no server.",
                            401: "`Invalid Discord token`: Discord rejected it (or did lately).",
                            429: _too_many(
                                "`Too many sessions are open with this bot token: log out of one "
                                "first` (MAX_SESSIONS_PER_TOKEN)",
                                "`Too many sessions are open from this address: log out of one "
                                "first` (MAX_SESSIONS_PER_IP)",
                            ),
                            503: _unavailable(
                                "`Maximum number of concurrent users reached` (MAX_CONCURRENT_USERS)",
                                _SHUTTING_DOWN,
                                "the bot's daily gateway logins used up",
                                _DISCORD_NOT_NOW,
                                _STORE_DOWN,
                            ),
                            504: "`Discord did not finish the login in time` (LOGIN_TIMEOUT).",
                        },
                    ),
                },
            }
        },
        "/api/auth/logout": {
            "post": {
                "operationId": "logout",
                "tags": ["auth"],
                "summary": "End the session",
                "security": _SESSION,
                "parameters": [_REQUEST_ID],
                "responses": {
                    "200": _ok(
                        "Logged out.", {"$ref": "#/components/schemas/Message"}, rate_limited=True
                    ),
                    **_errors(
                        401, 429, 503, rate_limited=True, texts={503: _unavailable(_STORE_DOWN)}
                    ),
                },
            }
        },
    }


def _data_paths() -> Json:
    member_headers = {
        "ETag": _header_ref("ETag"),
        "Vary": _header_ref("Vary"),
        "Content-Encoding": _header_ref("Content-Encoding", required=False),
    }
    members_ok = _ok(
        "The members, ordered by id.",
        {"$ref": "#/components/schemas/MemberList"},
        rate_limited=True,
        extra_headers=member_headers,
    )
    return {
        "/api/members": {
            "get": {
                "operationId": "listMembers",
                "tags": ["members"],
                "summary": "The guild's members with their roles",
                "description": "Without `limit` the whole list (as the original did); `limit` and "
                "`after` page through it. Served from the gateway-maintained cache "
                "with an `ETag`: send it back in `If-None-Match` to get 304 while "
                "nothing changed. gzip when the client accepts it.",
                "security": _SESSION,
                "parameters": [
                    _GUILD_ID,
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": members_api.MAX_PAGE},
                        f"Page size, 1–{members_api.MAX_PAGE}; default: the whole list.",
                    ),
                    _query(
                        "after",
                        {"$ref": "#/components/schemas/Snowflake"},
                        "Only members whose id is greater (0: from the start).",
                    ),
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "required": False,
                        "description": "An `ETag` of an earlier answer.",
                        "schema": {"type": "string"},
                    },
                    _REQUEST_ID,
                ],
                "responses": {
                    "200": members_ok,
                    "304": {
                        "description": "Not modified since the `ETag` sent in `If-None-Match`.",
                        "headers": _headers(
                            rate_limited=True,
                            extra={"ETag": _header_ref("ETag"), "Vary": _header_ref("Vary")},
                        ),
                    },
                    **_errors(
                        400,
                        401,
                        404,
                        429,
                        502,
                        503,
                        504,
                        rate_limited=True,
                        texts={
                            404: "`Guild not found`: not one of the bot's guilds.",
                            503: _unavailable(
                                "`The member list is still loading; try again shortly` (Discord "
                                "allows one full member list per guild every 30 s)",
                                _RECONNECTING,
                                _SHUTTING_DOWN,
                                _STORE_DOWN,
                            ),
                        },
                    ),
                },
            }
        },
        "/api/channels": {
            "get": {
                "operationId": "listChannels",
                "tags": ["channels"],
                "summary": "The guild's channels",
                "security": _SESSION,
                "parameters": [
                    _GUILD_ID,
                    _query(
                        "type",
                        _any_case(CHANNEL_KINDS, default="text"),
                        "Which channels: `text` (default, as the original), `voice`, "
                        "`category` or `all`, in any case.",
                    ),
                    _REQUEST_ID,
                ],
                "responses": {
                    "200": _ok(
                        "The channels, in Discord's order.",
                        {"$ref": "#/components/schemas/ChannelList"},
                        rate_limited=True,
                        links={
                            "ListMessages": {
                                "operationId": "listMessages",
                                "parameters": {"query.channelId": "$response.body#/0/id"},
                            }
                        },
                    ),
                    **_errors(
                        400,
                        401,
                        404,
                        429,
                        502,
                        503,
                        504,
                        rate_limited=True,
                        texts={
                            404: "`Guild not found`: not one of the bot's guilds.",
                            503: _unavailable(_RECONNECTING, _SHUTTING_DOWN, _STORE_DOWN),
                        },
                    ),
                },
            }
        },
        "/api/messages": {
            "get": {
                "operationId": "listMessages",
                "tags": ["messages"],
                "summary": "A channel's messages, newest first",
                "description": "Read from Discord's REST API. At most one of `before`, `after` and "
                "`around` picks the page (400 otherwise).",
                "security": _SESSION,
                "parameters": [
                    _query(
                        "channelId",
                        {"$ref": "#/components/schemas/Snowflake"},
                        "The channel (400 `Channel ID is required` without it).",
                        required=True,
                    ),
                    _GUILD_ID,
                    _query(
                        "limit",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": messages_api.MAX_PAGE,
                            "default": messages_api.MAX_PAGE,
                        },
                        f"How many, 1–{messages_api.MAX_PAGE}.",
                    ),
                    *(
                        _query(
                            name,
                            {"$ref": "#/components/schemas/Snowflake"},
                            f"Messages {name} this message id.",
                        )
                        for name in messages_api.CURSORS
                    ),
                    _REQUEST_ID,
                ],
                "responses": {
                    "200": _ok(
                        "The messages.",
                        {"$ref": "#/components/schemas/MessageList"},
                        rate_limited=True,
                    ),
                    **_errors(
                        400,
                        401,
                        403,
                        404,
                        429,
                        502,
                        503,
                        504,
                        rate_limited=True,
                        texts={
                            403: "The bot cannot read this channel.",
                            404: "No such channel in this guild (or no such guild).",
                            503: _MESSAGES_UNAVAILABLE,
                        },
                    ),
                },
            }
        },
    }


def _sending_paths() -> Json:
    channel = _query(
        "channelId",
        {"$ref": "#/components/schemas/Snowflake"},
        "The message's channel (400 `Channel ID is required` without it).",
        required=True,
    )
    message_id = {
        "name": "message_id",
        "in": "path",
        "required": True,
        "description": "The message's id.",
        "schema": {"$ref": "#/components/schemas/Snowflake"},
    }
    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Your key for this message (1–255 printable ASCII characters): a "
        "request repeated with the same key within a few minutes answers with "
        "the message already posted instead of posting it again.",
        "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
    }
    message = {"$ref": "#/components/schemas/ChatMessage"}
    edit_links = {
        "EditMessage": {
            "operationId": "editMessage",
            "parameters": {
                "path.message_id": "$response.body#/id",
                "query.channelId": "$response.body#/channelId",
            },
        },
        "DeleteMessage": {
            "operationId": "deleteMessage",
            "parameters": {
                "path.message_id": "$response.body#/id",
                "query.channelId": "$response.body#/channelId",
            },
        },
    }

    def errors(*statuses: int, **texts: str) -> Json:
        return _errors(
            *statuses,
            rate_limited=True,
            texts={
                403: texts.get("forbidden", "The bot may not send in this channel."),
                404: "No such channel in this guild (or no such guild), or no such message.",
                503: _MESSAGES_UNAVAILABLE,
                504: "Discord did not answer within DISCORD_TIMEOUT (a send may still have been "
                "posted: retry with the same `Idempotency-Key`).",
            },
        )

    return {
        "/api/messages": {
            "post": {
                "operationId": "sendMessage",
                "tags": ["messages"],
                "summary": "Post a message as the bot",
                "description": "Mentions ping no one unless `allowMentions` is true (a reply does "
                "not ping its author either). The bot needs permission to send in "
                "the channel (403, known without asking Discord).",
                "security": _SESSION,
                "parameters": [_GUILD_ID, idempotency_key, _REQUEST_ID],
                "requestBody": _body("SendMessageRequest"),
                "responses": {
                    "201": _ok(
                        "The message as posted (or as posted before, for a repeated "
                        "`Idempotency-Key`).",
                        message,
                        rate_limited=True,
                        links=edit_links,
                    ),
                    **errors(400, 401, 403, 404, 413, 429, 502, 503, 504),
                },
            }
        },
        "/api/messages/{message_id}": {
            "patch": {
                "operationId": "editMessage",
                "tags": ["messages"],
                "summary": "Replace the content of one of the bot's messages",
                "security": _SESSION,
                "parameters": [message_id, channel, _GUILD_ID, _REQUEST_ID],
                "requestBody": _body("EditMessageRequest"),
                "responses": {
                    "200": _ok("The edited message.", message, rate_limited=True),
                    **errors(
                        400,
                        401,
                        403,
                        404,
                        413,
                        429,
                        502,
                        503,
                        504,
                        forbidden="Not the bot's own message, or the bot may no longer "
                        "see the channel.",
                    ),
                },
            },
            "delete": {
                "operationId": "deleteMessage",
                "tags": ["messages"],
                "summary": "Delete a message",
                "description": "The bot's own, or anyone's with Manage Messages.",
                "security": _SESSION,
                "parameters": [message_id, channel, _GUILD_ID, _REQUEST_ID],
                "responses": {
                    "204": _no_content("Deleted."),
                    **errors(
                        400,
                        401,
                        403,
                        404,
                        429,
                        502,
                        503,
                        504,
                        forbidden="The bot may not delete this message.",
                    ),
                },
            },
        },
    }


def _event_paths() -> Json:
    event_id = {
        "type": "string",
        "pattern": "^[!-~]{0,100}$",
        "description": "An event id this API sent (empty: from now).",
    }
    guild_texts = {
        404: "`Guild not found`: not one of the bot's guilds.",
        503: _unavailable(_STREAMS_FULL, _RECONNECTING, _SHUTTING_DOWN, _STORE_DOWN),
    }
    poll_ok = _ok(
        "The events after `after`, oldest first (`[]` when none came within `wait`), or a reset.",
        {
            "oneOf": [
                {"$ref": "#/components/schemas/EventList"},
                {"$ref": "#/components/schemas/EventReset"},
            ]
        },
        rate_limited=True,
        extra_headers={"X-Event-Cursor": _header_ref("X-Event-Cursor")},
        links={
            "PollAgain": {
                "operationId": "pollEvents",
                "parameters": {"query.after": "$response.header.X-Event-Cursor"},
            }
        },
    )
    stream_ok: Json = {
        "description": "A Server-Sent Events stream: `: connected` at once, then a frame per "
        "event (`id`, `event`: its type, `data`: its `data` as JSON), "
        "`event: reset` (`data: {}`) first when the id to resume from is no "
        "longer kept (re-read over REST), `: heartbeat` every 15 s, "
        '`event: end` when the session ends (`data: {"reason": "session ended"}`) or '
        'the server stops (`"server shutting down"`: the session may go on, open a new '
        "stream), and `retry: 1000` before it "
        "closes after EVENT_STREAM_MAX_SECONDS (reconnect with `Last-Event-ID`).",
        "headers": _headers(rate_limited=True),
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'id: 3f9c2a1b-42\nevent: member.join\ndata: {"id": "1180000000000012345", '
                "...}\n\n",
            }
        },
    }
    return {
        "/api/events": {
            "get": {
                "operationId": "streamEvents",
                "tags": ["events"],
                "summary": "The guild's events as they happen (Server-Sent Events)",
                "description": "Open with `Authorization`, or, from a browser's `EventSource` (which "
                "cannot send it), with `?ticket=` from `POST /api/events/ticket`. "
                "An open stream counts as session activity. Each open stream holds a "
                "server thread: they share MAX_EVENT_STREAMS with waiting long-polls.",
                "security": [{"session": []}, {"streamTicket": []}],
                "parameters": [
                    _GUILD_ID,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "Resume after this event (EventSource sends it when it "
                        "reconnects); default: from now.",
                        "schema": event_id,
                    },
                    _query(
                        "lastEventId",
                        event_id,
                        "As `Last-Event-ID`, for clients that cannot send it.",
                    ),
                    _REQUEST_ID,
                ],
                "responses": {
                    "200": stream_ok,
                    **_errors(
                        400,
                        401,
                        404,
                        429,
                        502,
                        503,
                        rate_limited=True,
                        texts={
                            **guild_texts,
                            401: "No session (`Unauthorized`), or `Invalid or expired ticket`.",
                        },
                    ),
                },
            }
        },
        "/api/events/poll": {
            "get": {
                "operationId": "pollEvents",
                "tags": ["events"],
                "summary": "The guild's events after an id, as JSON (long-poll)",
                "description": "Answers at once when events (or a reset) are there, else waits up "
                "to `wait` seconds for the first one. Pass `X-Event-Cursor` as "
                "`after` next time. A waiting long-poll holds a server thread "
                "(MAX_EVENT_STREAMS, shared with streams).",
                "security": _SESSION,
                "parameters": [
                    _query("after", event_id, "The last event id you have; default: from now."),
                    _query(
                        "wait",
                        {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": events_api.MAX_POLL_WAIT_S,
                            "default": 0,
                        },
                        f"Seconds to wait for the first event, 0–{events_api.MAX_POLL_WAIT_S}.",
                    ),
                    _query(
                        "limit",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": events_api.MAX_POLL_LIMIT,
                            "default": events_api.MAX_POLL_LIMIT,
                        },
                        f"How many events at most, 1–{events_api.MAX_POLL_LIMIT}.",
                    ),
                    _GUILD_ID,
                    _REQUEST_ID,
                ],
                "responses": {
                    "200": poll_ok,
                    **_errors(400, 401, 404, 429, 502, 503, rate_limited=True, texts=guild_texts),
                },
            }
        },
        "/api/events/ticket": {
            "post": {
                "operationId": "streamTicket",
                "tags": ["events"],
                "summary": "A one-time ticket to open an event stream with `?ticket=`",
                "description": f"Valid once, for {int(TICKET_TTL_S)} seconds, for this session's "
                "streams only: a ticket that leaks into a log is worthless.",
                "security": _SESSION,
                "parameters": [_REQUEST_ID],
                "responses": {
                    "201": _ok(
                        "The ticket.",
                        {"$ref": "#/components/schemas/StreamTicket"},
                        rate_limited=True,
                    ),
                    **_errors(
                        401, 429, 503, rate_limited=True, texts={503: _unavailable(_STORE_DOWN)}
                    ),
                },
            }
        },
    }


def _webhook_paths() -> Json:
    session_texts = {503: _unavailable(_STORE_DOWN)}
    return {
        "/api/webhooks": {
            "post": {
                "operationId": "registerWebhook",
                "tags": ["webhooks"],
                "summary": "Have the guild's events POSTed to a URL",
                "description": "The `secret` (it signs each delivery) is shown this once. The "
                "webhook belongs to the session and ends with it. Deliveries "
                "are described under `webhooks`.",
                "security": _SESSION,
                "parameters": [_GUILD_ID, _REQUEST_ID],
                "requestBody": _body("WebhookRequest"),
                "responses": {
                    "201": _ok(
                        "Registered.",
                        {"$ref": "#/components/schemas/WebhookCreated"},
                        rate_limited=True,
                        links={
                            "DeleteWebhook": {
                                "operationId": "deleteWebhook",
                                "parameters": {"path.webhook_id": "$response.body#/id"},
                            }
                        },
                    ),
                    **_errors(
                        400,
                        401,
                        404,
                        413,
                        429,
                        502,
                        503,
                        rate_limited=True,
                        texts={
                            400: "`Invalid JSON payload`, a `url` that is not http(s), carries "
                            "credentials, does not resolve, or leads to a loopback, private, "
                            "link-local, multicast or reserved address (unless "
                            "WEBHOOK_ALLOW_PRIVATE), or a bad `events` list.",
                            404: "`Guild not found`: not one of the bot's guilds.",
                            429: _too_many(
                                "`Too many webhooks for this session (at most N): "
                                "delete one first` (MAX_WEBHOOKS_PER_SESSION)"
                            ),
                            503: _unavailable(_RECONNECTING, _SHUTTING_DOWN, _STORE_DOWN),
                        },
                    ),
                },
            },
            "get": {
                "operationId": "listWebhooks",
                "tags": ["webhooks"],
                "summary": "The session's webhooks and how their deliveries go",
                "security": _SESSION,
                "parameters": [_REQUEST_ID],
                "responses": {
                    "200": _ok(
                        "The webhooks, oldest first (never their secrets).",
                        {"$ref": "#/components/schemas/WebhookList"},
                        rate_limited=True,
                    ),
                    **_errors(401, 429, 503, rate_limited=True, texts=session_texts),
                },
            },
        },
        "/api/webhooks/{webhook_id}": {
            "delete": {
                "operationId": "deleteWebhook",
                "tags": ["webhooks"],
                "summary": "Delete one of the session's webhooks",
                "security": _SESSION,
                "parameters": [
                    {
                        "name": "webhook_id",
                        "in": "path",
                        "required": True,
                        "description": "The webhook's `id`.",
                        "schema": {"$ref": "#/components/schemas/WebhookId"},
                    },
                    _REQUEST_ID,
                ],
                "responses": {
                    "204": _no_content("Deleted; no more deliveries."),
                    **_errors(
                        401,
                        404,
                        429,
                        503,
                        rate_limited=True,
                        texts={**session_texts, 404: "`Webhook not found` (among this session's)."},
                    ),
                },
            }
        },
    }


def _deliveries() -> Json:
    def header(name: str, description: str, schema: Json) -> Json:
        return {
            "name": name,
            "in": "header",
            "required": True,
            "description": description,
            "schema": schema,
        }

    return {
        "event": {
            "post": {
                "operationId": "deliverEvent",
                "tags": ["webhooks"],
                "summary": "A delivery to a registered webhook's URL",
                "description": "One event per request, in order per webhook. Verify the signature over "
                "the raw body and refuse timestamps more than 300 s away from your "
                "clock. Network errors, timeouts (WEBHOOK_TIMEOUT), 5xx and 429 are "
                "tried again with the same `id` (up to WEBHOOK_MAX_ATTEMPTS tries, "
                "backing off); redirects are not followed, other answers are not "
                "retried; WEBHOOK_DISABLE_AFTER failed deliveries in a row disable the "
                "webhook.",
                "parameters": [
                    header("X-MemberSense-Event", "The event's type.", {"enum": list(EVENT_TYPES)}),
                    header(
                        "X-MemberSense-Delivery",
                        "The event's id, the same on every try: drop duplicates by it.",
                        {"type": "string"},
                    ),
                    header(
                        "X-MemberSense-Timestamp",
                        "When this try was sent, in Unix seconds.",
                        {"type": "string", "pattern": "^[0-9]+$"},
                    ),
                    header(
                        "X-MemberSense-Signature",
                        "`sha256=` and the hex HMAC-SHA256 of "
                        "`<timestamp>.<body>` keyed with the secret.",
                        {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": _json({"$ref": "#/components/schemas/Event"}),
                },
                "responses": {
                    "2XX": {"description": "Delivered."},
                    "default": {"description": "Not delivered: retried after a 5xx or 429."},
                },
            }
        }
    }


def _ready_path() -> Json:
    return {
        "/_ah/ready": {
            "get": {
                "operationId": "ready",
                "tags": ["health"],
                "summary": "Readiness: 200 while this process can serve",
                "description": "503 once it is shutting down and, in Redis mode, while Redis cannot be "
                "reached: send traffic elsewhere meanwhile. Never rate limited.",
                "security": [],
                "parameters": [_REQUEST_ID],
                "responses": {
                    "200": _ok(
                        "Ready.", {"$ref": "#/components/schemas/Ready"}, rate_limited=False
                    ),
                    **_errors(503, rate_limited=False, texts={503: "`Not ready`."}),
                },
            }
        }
    }


def _page_paths() -> Json:
    def page(
        operation_id: str,
        tag: str,
        summary: str,
        content: Json,
        *,
        not_found: bool = False,
        parameters: list[Json] | None = None,
    ) -> Json:
        responses: Json = {
            "200": {
                "description": summary,
                "headers": _headers(rate_limited=False),
                "content": content,
            }
        }
        responses.update(_errors(*((404,) if not_found else ()), rate_limited=False))
        return {
            "get": {
                "operationId": operation_id,
                "tags": [tag],
                "summary": summary,
                "security": [],
                "parameters": [*(parameters or []), _REQUEST_ID],
                "responses": responses,
            }
        }

    def filename(description: str) -> Json:
        return {
            "name": "filename",
            "in": "path",
            "required": True,
            "description": description,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
        }

    any_file = {"*/*": {"schema": {"type": "string"}}}
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/_ah/health": page(
            "health",
            "health",
            "Liveness: 200 while the process serves",
            _json({"$ref": "#/components/schemas/Health"}),
        ),
        "/api/openapi.json": page("openapi", "docs", "This document", _json({"type": "object"})),
        "/api/docs": page("apiDocs", "docs", "This document as a web page", html),
        "/api/docs/{filename}": page(
            "apiDocsAsset",
            "docs",
            "The docs page's script and style",
            any_file,
            not_found=True,
            parameters=[filename("An asset of the docs page.")],
        ),
        "/": page("dashboard", "dashboard", "The dashboard (a web client of this API)", html),
        "/dashboard/{filename}": page(
            "dashboardAsset",
            "dashboard",
            "The dashboard's scripts and styles",
            any_file,
            not_found=True,
            parameters=[filename("A file of the dashboard.")],
        ),
    }


def _metrics_path(settings: Settings) -> Json:
    protected = bool(settings.metrics_token)
    responses: Json = {
        "200": {
            "description": "Every metric in Prometheus' text format.",
            "headers": _headers(rate_limited=False),
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }
    if protected:
        responses.update(
            _errors(
                401,
                rate_limited=False,
                texts={401: "No `Authorization: Bearer <METRICS_TOKEN>`, or a wrong token."},
            )
        )
        responses["401"]["headers"]["WWW-Authenticate"] = _header_ref("WWW-Authenticate")
    else:
        responses.update(_errors(rate_limited=False))
    return {
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["metrics"],
                "summary": "Prometheus metrics",
                "description": "Served only when METRICS_TOKEN (bearer-protected) or METRICS_PUBLIC=1 "
                "is set; otherwise 404 like any unknown path. Never rate limited.",
                "security": [{"metricsToken": []}] if protected else [],
                "parameters": [_REQUEST_ID],
                "responses": responses,
            }
        }
    }


# -- components ---------------------------------------------------------------------


def _schemas() -> Json:
    def obj(properties: Json, *, optional: tuple[str, ...] = ()) -> Json:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": properties,
            "required": [name for name in properties if name not in optional],
        }

    string, nullable_string = {"type": "string"}, {"type": ["string", "null"]}
    snowflake = {"$ref": "#/components/schemas/Snowflake"}
    return {
        "Snowflake": _SNOWFLAKE,
        "Error": obj({"error": {"type": "string", "minLength": 1}}),
        "RetryableError": obj(
            {
                "error": {"type": "string", "minLength": 1},
                "retryAfter": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Seconds, as in Retry-After.",
                },
            }
        ),
        "Message": obj({"message": string}),
        "Health": obj({"status": {"const": "healthy"}}),
        "Ready": obj({"status": {"const": "ready"}}),
        "LoginRequest": {
            "type": "object",
            "required": ["token"],
            "properties": {
                "token": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 256,
                    "description": "The bot's token (a `Bot ` prefix is accepted).",
                }
            },
        },
        "LoginResponse": obj(
            {
                "sessionId": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9_-]{21}$",
                    "description": "Send it in `Authorization`.",
                },
                "message": {"const": "Logged in successfully"},
                "serverName": string,
                "memberCount": {"type": "integer", "minimum": 0},
                "iconURL": nullable_string,
                "guildId": snowflake,
                "guilds": {
                    "type": "array",
                    "minItems": 2,
                    "description": "Every guild of a bot in several, the default first.",
                    "items": obj({"id": snowflake, "name": string}),
                },
            },
            optional=("guilds",),
        ),
        "Member": obj(
            {
                "id": snowflake,
                "username": string,
                "displayName": string,
                "avatar": {"type": "string", "format": "uri"},
                "roles": {
                    "type": "array",
                    "items": string,
                    "minItems": 1,
                    "description": "Role names, highest first, `@everyone` last.",
                },
                "role": {"type": "string", "description": "The highest role's name."},
                "joinedAt": {"type": ["string", "null"], "format": "date-time"},
                "bot": {"type": "boolean"},
                "roleColor": {
                    "type": ["string", "null"],
                    "pattern": "^#[0-9a-f]{6}$",
                    "description": "The colour Discord gives the member's name: that of "
                    "the highest role with a colour, or null.",
                },
            }
        ),
        "MemberList": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}},
        "Channel": obj(
            {
                "id": snowflake,
                "name": string,
                "type": {
                    "type": "string",
                    "description": "Discord's channel type name: text, "
                    "voice, category, news, forum, ...",
                },
                "parentId": {"oneOf": [snowflake, {"type": "null"}]},
                "position": {"type": "integer"},
                "topic": nullable_string,
                "canSend": {
                    "type": "boolean",
                    "description": "Whether the bot may post there: it can view the channel "
                    "and has Send Messages (POST /api/messages answers 403 where not).",
                },
            }
        ),
        "ChannelList": {"type": "array", "items": {"$ref": "#/components/schemas/Channel"}},
        "ChatMessage": obj(
            {
                "id": snowflake,
                "channelId": snowflake,
                "content": string,
                "author": obj(
                    {
                        "id": snowflake,
                        "username": string,
                        "name": string,
                        "avatar": {"type": "string", "format": "uri"},
                    }
                ),
                "timestamp": {"type": ["integer", "null"], "description": "Epoch milliseconds."},
                "editedTimestamp": {"type": ["integer", "null"]},
                "attachments": {
                    "type": "array",
                    "items": obj(
                        {
                            "id": string,
                            "filename": nullable_string,
                            "url": nullable_string,
                            "size": {"type": ["integer", "null"]},
                            "contentType": nullable_string,
                        }
                    ),
                },
                "embeds": {"type": "integer", "minimum": 0, "description": "How many embeds."},
                "replyTo": {
                    "oneOf": [snowflake, {"type": "null"}],
                    "description": "The id of the message this one answers.",
                },
            }
        ),
        "MessageList": {"type": "array", "items": {"$ref": "#/components/schemas/ChatMessage"}},
        **_writing_schemas(),
        **_event_schemas(obj),
        **_webhook_schemas(obj),
    }


def _writing_schemas() -> Json:
    # Request bodies: what the server accepts (other properties are ignored).
    content = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_CONTENT,
        "pattern": r"\S",
        "description": f"1–{MAX_CONTENT} characters, not only spaces.",
    }
    allow_mentions = {
        "type": "boolean",
        "default": False,
        "description": "Let mentions ping (Discord's own rules apply); by "
        "default they stay in the text but ping no one.",
    }
    snowflake = {"$ref": "#/components/schemas/Snowflake"}
    return {
        "SendMessageRequest": {
            "type": "object",
            "required": ["channelId", "content"],
            "properties": {
                "channelId": snowflake,
                "content": content,
                "replyTo": {**snowflake, "description": "Answer this message of the same channel."},
                "allowMentions": allow_mentions,
            },
        },
        "EditMessageRequest": {
            "type": "object",
            "required": ["content"],
            "properties": {"content": content, "allowMentions": allow_mentions},
        },
    }


#: What the event ids this API sends look like (printable ASCII, as the views accept).
_EVENT_ID_PATTERN = "^[!-~]{1,100}$"
#: Each event type's `data`: the shape the REST endpoints give the same object, ids alone
#: for what is gone.
_EVENT_DATA: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("member.join", "member.update"), "Member", "A member, as `GET /api/members` shows it."),
    (("member.leave",), "MemberLeft", "The member who left."),
    (
        ("message.create", "message.update"),
        "ChatMessage",
        "A message, as `GET /api/messages` shows it.",
    ),
    (("message.delete",), "MessageDeleted", "The deleted message."),
    (
        ("channel.create", "channel.update"),
        "Channel",
        "A channel, as `GET /api/channels` shows it.",
    ),
    (("channel.delete",), "ChannelDeleted", "The deleted channel."),
    (("guild.update",), "GuildSummary", "The guild, as the login describes it."),
)


def _event_schemas(obj: Any) -> Json:
    snowflake = {"$ref": "#/components/schemas/Snowflake"}
    listed = [name for types, _, _ in _EVENT_DATA for name in types]
    assert sorted(listed) == sorted(EVENT_TYPES), "every event type has its data documented"
    event_id = {"$ref": "#/components/schemas/EventId"}
    return {
        "EventId": {
            "type": "string",
            "pattern": _EVENT_ID_PATTERN,
            "description": "Opaque, increasing within a guild's events.",
            "examples": ["3f9c2a1b-42"],
        },
        "Event": {
            "description": "One thing that happened in a guild; `data` by `type`.",
            "oneOf": [
                {
                    **obj(
                        {
                            "id": event_id,
                            "type": {"enum": list(types)},
                            "guildId": snowflake,
                            "timestamp": {
                                "type": "integer",
                                "description": "When MemberSense saw it, in epoch milliseconds.",
                            },
                            "data": {"$ref": f"#/components/schemas/{data}"},
                        }
                    ),
                    "title": " / ".join(types),
                    "description": description,
                }
                for types, data, description in _EVENT_DATA
            ],
        },
        "EventList": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        "EventReset": {
            **obj({"reset": {"const": True}, "cursor": event_id}),
            "description": "`after` can no longer be continued from: re-read what "
            "you show over REST, then poll after `cursor`.",
        },
        "MemberLeft": obj({"id": snowflake}),
        "MessageDeleted": obj({"id": snowflake, "channelId": snowflake}),
        "ChannelDeleted": obj({"id": snowflake}),
        "GuildSummary": obj(
            {
                "id": snowflake,
                "name": {"type": "string"},
                "memberCount": {"type": "integer", "minimum": 0},
                "iconURL": {"type": ["string", "null"]},
            }
        ),
        "StreamTicket": obj(
            {
                "ticket": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9_-]{32}$",
                    "description": "Pass it as `?ticket=` to `GET /api/events`.",
                },
                "expiresIn": {"type": "integer", "minimum": 1, "description": "Seconds."},
            }
        ),
    }


def _webhook_schemas(obj: Any) -> Json:
    events = {
        "type": "array",
        "minItems": 1,
        "items": {"enum": list(EVENT_TYPES)},
        "description": "The event types to deliver.",
    }
    url = {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_URL_LENGTH,
        "description": "An http or https URL without credentials, on a public address.",
    }
    webhook = {
        "id": {"$ref": "#/components/schemas/WebhookId"},
        "url": {"type": "string"},
        "events": events,
        "guildId": {"$ref": "#/components/schemas/Snowflake"},
        "createdAt": {"type": "integer", "description": "Epoch milliseconds."},
        "active": {
            "type": "boolean",
            "description": "False once disabled after failed deliveries.",
        },
        "failures": {"type": "integer", "minimum": 0, "description": "Deliveries failed in a row."},
        "lastError": {"type": ["string", "null"], "description": "Why the last one failed."},
        "lastDeliveryAt": {
            "type": ["integer", "null"],
            "description": "When one last succeeded, epoch milliseconds.",
        },
    }
    return {
        "WebhookId": {"type": "string", "pattern": "^[A-Za-z0-9_-]{21}$"},
        "WebhookRequest": {
            "type": "object",
            "required": ["url", "events"],
            "properties": {"url": url, "events": events},
        },
        "Webhook": obj(webhook),
        "WebhookCreated": obj(
            {
                **webhook,
                "secret": {
                    "type": "string",
                    "pattern": "^whsec_[A-Za-z0-9_-]+$",
                    "description": "Signs each delivery; shown only here.",
                },
            }
        ),
        "WebhookList": {"type": "array", "items": {"$ref": "#/components/schemas/Webhook"}},
    }


def _header(description: str, schema: Json, required: bool = True) -> Json:
    return {"description": description, "required": required, "schema": schema}


def _header_components() -> Json:
    integer = {"type": "string", "pattern": "^[0-9]+$"}
    headers = {
        "X-Request-ID": _header("This request's id (yours, if sane).", {"type": "string"}),
        "Retry-After": _header(
            "Seconds to wait before trying again.", {"type": "string", "pattern": "^[1-9][0-9]*$"}
        ),
        "RateLimit-Limit": _header("Requests allowed per window.", integer),
        "RateLimit-Remaining": _header("Requests left in the window.", integer),
        "RateLimit-Reset": _header("Seconds until the window frees a request.", integer),
        "RateLimit-Policy": _header(
            "`<limit>;w=<window seconds>`.", {"type": "string", "pattern": "^[0-9]+;w=[0-9]+$"}
        ),
        "ETag": _header("The list's entity tag.", {"type": "string", "pattern": '^"[^"]+"$'}),
        "Vary": _header("Names Accept-Encoding.", {"type": "string"}),
        "Content-Encoding": _header(
            "`gzip` when the client accepts it.", {"type": "string", "const": "gzip"}
        ),
        "WWW-Authenticate": _header('`Bearer realm="metrics"`.', {"type": "string"}),
        "X-Event-Cursor": _header(
            "The event id to pass as `after` next time.",
            {"type": "string", "pattern": _EVENT_ID_PATTERN},
        ),
    }
    for name in (*_RATE_LIMIT_HEADERS, "Content-Encoding"):
        headers[f"{name}Optional"] = {**headers[name], "required": False}
    return headers


@functools.lru_cache(maxsize=8)
def _cached(settings: Settings) -> Json:
    paths: Json = {}
    for part in (
        _auth_paths(),
        _data_paths(),
        _sending_paths(),
        _event_paths(),
        _webhook_paths(),
        _ready_path(),
        _page_paths(),
    ):
        for path, item in part.items():
            paths.setdefault(path, {}).update(item)
    security_schemes: Json = {
        "session": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "The `sessionId` of a login, bare (as the original web client sends "
            "it) or as `Bearer <sessionId>`.",
        },
        "streamTicket": {
            "type": "apiKey",
            "in": "query",
            "name": "ticket",
            "description": "A one-time ticket from `POST /api/events/ticket`; accepted by "
            "`GET /api/events` only.",
        },
    }
    if settings.metrics_enabled:
        paths.update(_metrics_path(settings))
    if settings.metrics_token:
        security_schemes["metricsToken"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "METRICS_TOKEN.",
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MemberSense",
            "version": _version(),
            "description": _DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": name}
            for name in (
                "auth",
                "members",
                "channels",
                "messages",
                "events",
                "webhooks",
                "health",
                "docs",
                "dashboard",
                "metrics",
            )
        ],
        "paths": paths,
        "webhooks": _deliveries(),
        "components": {
            "schemas": _schemas(),
            "headers": _header_components(),
            "securitySchemes": security_schemes,
        },
    }


def build_document(settings: Settings) -> Json:
    """The OpenAPI document of the API served with *settings* (a fresh copy to keep or change)."""
    return copy.deepcopy(_cached(settings))
