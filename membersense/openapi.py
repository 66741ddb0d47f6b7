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

from membersense.api import members as members_api
from membersense.api import messages as messages_api
from membersense.api.channels import CHANNEL_KINDS
from membersense.config import Settings

__all__ = ["build_document"]

Json = dict[str, Any]

_SNOWFLAKE = {"type": "string", "pattern": "^[0-9]{1,19}$",
              "description": "A Discord id (a snowflake), as a decimal string.",
              "examples": ["1180000000000000456"]}

_DESCRIPTION = """\
A self-hosted REST gateway to a Discord bot's guild data. Log in with the bot's token,
then send the session id in `Authorization` (bare, or as `Bearer <sessionId>`).

**Errors** are always JSON, `{"error": "<message>"}`, with the statuses each operation
lists. 429 and 503 add `retryAfter` (seconds) to the body and a `Retry-After` header.
A path that is not listed here answers 404 `{"error": "Not Found"}`; a listed path with
another method 405 `{"error": "Method Not Allowed"}` with `Allow`. Any operation may
answer 500 `{"error": "Internal Server Error"}`: that is a bug, and never carries its
cause.

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


_RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
                       "RateLimit-Policy")


def _headers(*, rate_limited: bool, retry_after: bool = False, rate_limit_known: bool = True,
             extra: Json | None = None) -> Json:
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


def _ok(description: str, schema: Json, *, rate_limited: bool, links: Json | None = None,
        extra_headers: Json | None = None) -> Json:
    response: Json = {"description": description,
                      "headers": _headers(rate_limited=rate_limited, extra=extra_headers),
                      "content": _json(schema)}
    if links:
        response["links"] = links
    return response


_ERROR_TEXT = {
    400: "Bad input: the message says which parameter and what it accepts.",
    401: "Missing, unknown or expired session.",
    403: "The bot may not read this.",
    404: "It does not exist for this bot.",
    413: "The body is over MAX_CONTENT_LENGTH (`Request Entity Too Large`).",
    429: "Too many requests from this address (`Too many requests`).",
    500: "A bug (`Internal Server Error`); never carries its cause.",
    502: "Discord answered with a server error, or could not be reached.",
    503: "MemberSense cannot take this request now (server full, shutting down, Discord "
         "rate limiting the bot, or holding back calls to Discord); retry after `Retry-After`.",
    504: "Discord did not answer in time.",
}


def _errors(*statuses: int, rate_limited: bool, texts: dict[int, str] | None = None) -> Json:
    responses: Json = {}
    for status in (*statuses, 500):
        retry = status in (429, 503)
        responses[str(status)] = {
            "description": (texts or {}).get(status, _ERROR_TEXT[status]),
            # A bug may strike before the rate limit has counted the request.
            "headers": _headers(rate_limited=rate_limited, retry_after=retry,
                                rate_limit_known=status != 500),
            "content": _json({"$ref": "#/components/schemas/"
                                      + ("RetryableError" if retry else "Error")}),
        }
    return responses


def _any_case(choices: tuple[str, ...], *, default: str) -> Json:
    # JSON Schema patterns have no case-insensitive flag: spell each letter both ways.
    spelled = ("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in choice)
               for choice in choices)
    return {"type": "string", "pattern": f"^(?:{'|'.join(spelled)})$", "default": default,
            "examples": list(choices)}


def _query(name: str, schema: Json, description: str, *, required: bool = False) -> Json:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}


_GUILD_ID = _query("guildId", {"$ref": "#/components/schemas/Snowflake"},
                   "The guild to read (one of the login's `guilds`); default: the login's guild.")
_REQUEST_ID = {"name": "X-Request-ID", "in": "header", "required": False,
               "description": "Your id for this request, echoed back when it is 1–128 "
                              "printable ASCII characters (else one is made up).",
               "schema": {"type": "string"}}
_SESSION: list[Json] = [{"session": []}]


def _session_link(operation_id: str, **parameters: str) -> Json:
    return {"operationId": operation_id,
            "parameters": {"header.Authorization": "$response.body#/sessionId", **parameters}}


# -- operations ---------------------------------------------------------------------

def _auth_paths() -> Json:
    login_links = {
        "ListMembers": _session_link("listMembers"),
        "ListChannels": _session_link("listChannels"),
        "Logout": _session_link("logout"),
    }
    return {
        "/api/auth/login": {"post": {
            "operationId": "login", "tags": ["auth"], "summary": "Log a bot token in",
            "description": "Opens a session for the bot. Logging the same token in twice "
                           "shares one gateway connection; the last session to end closes it.",
            "security": [],
            "parameters": [_REQUEST_ID],
            "requestBody": {"required": True, "content": _json(
                {"$ref": "#/components/schemas/LoginRequest"})},
            "responses": {
                "200": _ok("Logged in.", {"$ref": "#/components/schemas/LoginResponse"},
                           rate_limited=True, links=login_links),
                **_errors(400, 401, 413, 429, 502, 503, 504, rate_limited=True, texts={
                    400: "`Invalid JSON payload`, `Token is required`, a privileged intent "
                         "the bot lacks (named), or a bot in no server.",
                    401: "`Invalid Discord token`: Discord rejected it (or did lately).",
                    503: "`Maximum number of concurrent users reached`, shutting down, the "
                         "bot's daily gateway logins used up, Discord rate limiting it, or "
                         "calls to Discord held back; retry after `Retry-After`.",
                    504: "Discord did not get the bot ready within LOGIN_TIMEOUT.",
                }),
            },
        }},
        "/api/auth/logout": {"post": {
            "operationId": "logout", "tags": ["auth"], "summary": "End the session",
            "security": _SESSION,
            "parameters": [_REQUEST_ID],
            "responses": {
                "200": _ok("Logged out.", {"$ref": "#/components/schemas/Message"},
                           rate_limited=True),
                **_errors(401, 429, rate_limited=True),
            },
        }},
    }


def _data_paths() -> Json:
    member_headers = {"ETag": _header_ref("ETag"), "Vary": _header_ref("Vary"),
                      "Content-Encoding": _header_ref("Content-Encoding", required=False)}
    members_ok = _ok("The members, ordered by id.", {"$ref": "#/components/schemas/MemberList"},
                     rate_limited=True, extra_headers=member_headers)
    return {
        "/api/members": {"get": {
            "operationId": "listMembers", "tags": ["members"],
            "summary": "The guild's members with their roles",
            "description": "Without `limit` the whole list (as the original did); `limit` and "
                           "`after` page through it. Served from the gateway-maintained cache "
                           "with an `ETag`: send it back in `If-None-Match` to get 304 while "
                           "nothing changed. gzip when the client accepts it.",
            "security": _SESSION,
            "parameters": [
                _GUILD_ID,
                _query("limit", {"type": "integer", "minimum": 1,
                                 "maximum": members_api.MAX_PAGE},
                       f"Page size, 1–{members_api.MAX_PAGE}; default: the whole list."),
                _query("after", {"$ref": "#/components/schemas/Snowflake"},
                       "Only members whose id is greater (0: from the start)."),
                {"name": "If-None-Match", "in": "header", "required": False,
                 "description": "An `ETag` of an earlier answer.", "schema": {"type": "string"}},
                _REQUEST_ID,
            ],
            "responses": {
                "200": members_ok,
                "304": {"description": "Not modified since the `ETag` sent in `If-None-Match`.",
                        "headers": _headers(rate_limited=True, extra={
                            "ETag": _header_ref("ETag"), "Vary": _header_ref("Vary")})},
                **_errors(400, 401, 404, 429, 502, 503, 504, rate_limited=True,
                          texts={404: "`Guild not found`: not one of the bot's guilds."}),
            },
        }},
        "/api/channels": {"get": {
            "operationId": "listChannels", "tags": ["channels"], "summary": "The guild's channels",
            "security": _SESSION,
            "parameters": [
                _GUILD_ID,
                _query("type", _any_case(CHANNEL_KINDS, default="text"),
                       "Which channels: `text` (default, as the original), `voice`, "
                       "`category` or `all`, in any case."),
                _REQUEST_ID,
            ],
            "responses": {
                "200": _ok("The channels, in Discord's order.",
                           {"$ref": "#/components/schemas/ChannelList"}, rate_limited=True,
                           links={"ListMessages": {
                               "operationId": "listMessages",
                               "parameters": {"query.channelId": "$response.body#/0/id"}}}),
                **_errors(400, 401, 404, 429, 502, 503, 504, rate_limited=True,
                          texts={404: "`Guild not found`: not one of the bot's guilds."}),
            },
        }},
        "/api/messages": {"get": {
            "operationId": "listMessages", "tags": ["messages"],
            "summary": "A channel's messages, newest first",
            "description": "Read from Discord's REST API. At most one of `before`, `after` and "
                           "`around` picks the page (400 otherwise).",
            "security": _SESSION,
            "parameters": [
                _query("channelId", {"$ref": "#/components/schemas/Snowflake"},
                       "The channel (400 `Channel ID is required` without it).", required=True),
                _GUILD_ID,
                _query("limit", {"type": "integer", "minimum": 1,
                                 "maximum": messages_api.MAX_PAGE,
                                 "default": messages_api.MAX_PAGE},
                       f"How many, 1–{messages_api.MAX_PAGE}."),
                *(_query(name, {"$ref": "#/components/schemas/Snowflake"},
                         f"Messages {name} this message id.")
                  for name in messages_api.CURSORS),
                _REQUEST_ID,
            ],
            "responses": {
                "200": _ok("The messages.", {"$ref": "#/components/schemas/MessageList"},
                           rate_limited=True),
                **_errors(400, 401, 403, 404, 429, 502, 503, 504, rate_limited=True, texts={
                    403: "The bot cannot read this channel.",
                    404: "No such channel in this guild (or no such guild).",
                }),
            },
        }},
    }


def _page_paths() -> Json:
    def page(operation_id: str, tag: str, summary: str, content: Json, *,
             not_found: bool = False, parameters: list[Json] | None = None) -> Json:
        responses: Json = {"200": {"description": summary,
                                   "headers": _headers(rate_limited=False),
                                   "content": content}}
        responses.update(_errors(*((404,) if not_found else ()), rate_limited=False))
        return {"get": {"operationId": operation_id, "tags": [tag], "summary": summary,
                        "security": [], "parameters": [*(parameters or []), _REQUEST_ID],
                        "responses": responses}}

    def filename(description: str) -> Json:
        return {"name": "filename", "in": "path", "required": True, "description": description,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"}}

    any_file = {"*/*": {"schema": {"type": "string"}}}
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/_ah/health": page("health", "health", "Liveness: 200 while the process serves",
                            _json({"$ref": "#/components/schemas/Health"})),
        "/api/openapi.json": page("openapi", "docs", "This document",
                                  _json({"type": "object"})),
        "/api/docs": page("apiDocs", "docs", "This document as a web page", html),
        "/api/docs/{filename}": page("apiDocsAsset", "docs", "The docs page's script and style",
                                     any_file, not_found=True,
                                     parameters=[filename("An asset of the docs page.")]),
        "/": page("dashboard", "dashboard", "The dashboard (a web client of this API)", html),
        "/dashboard/{filename}": page("dashboardAsset", "dashboard",
                                      "The dashboard's scripts and styles", any_file,
                                      not_found=True,
                                      parameters=[filename("A file of the dashboard.")]),
    }


def _metrics_path(settings: Settings) -> Json:
    protected = bool(settings.metrics_token)
    responses: Json = {"200": {
        "description": "Every metric in Prometheus' text format.",
        "headers": _headers(rate_limited=False),
        "content": {"text/plain": {"schema": {"type": "string"}}}}}
    if protected:
        responses.update(_errors(401, rate_limited=False, texts={
            401: "No `Authorization: Bearer <METRICS_TOKEN>`, or a wrong token."}))
        responses["401"]["headers"]["WWW-Authenticate"] = _header_ref("WWW-Authenticate")
    else:
        responses.update(_errors(rate_limited=False))
    return {"/metrics": {"get": {
        "operationId": "metrics", "tags": ["metrics"], "summary": "Prometheus metrics",
        "description": "Served only when METRICS_TOKEN (bearer-protected) or METRICS_PUBLIC=1 "
                       "is set; otherwise 404 like any unknown path. Never rate limited.",
        "security": [{"metricsToken": []}] if protected else [],
        "parameters": [_REQUEST_ID],
        "responses": responses,
    }}}


# -- components ---------------------------------------------------------------------

def _schemas() -> Json:
    def obj(properties: Json, *, optional: tuple[str, ...] = ()) -> Json:
        return {"type": "object", "additionalProperties": False, "properties": properties,
                "required": [name for name in properties if name not in optional]}

    string, nullable_string = {"type": "string"}, {"type": ["string", "null"]}
    snowflake = {"$ref": "#/components/schemas/Snowflake"}
    return {
        "Snowflake": _SNOWFLAKE,
        "Error": obj({"error": {"type": "string", "minLength": 1}}),
        "RetryableError": obj({"error": {"type": "string", "minLength": 1},
                               "retryAfter": {"type": "integer", "minimum": 1,
                                              "description": "Seconds, as in Retry-After."}}),
        "Message": obj({"message": string}),
        "Health": obj({"status": {"const": "healthy"}}),
        "LoginRequest": {
            "type": "object", "required": ["token"],
            "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 256,
                                     "description": "The bot's token (a `Bot ` prefix is "
                                                    "accepted)."}}},
        "LoginResponse": obj({
            "sessionId": {"type": "string", "pattern": "^[A-Za-z0-9_-]{21}$",
                          "description": "Send it in `Authorization`."},
            "message": {"const": "Logged in successfully"},
            "serverName": string,
            "memberCount": {"type": "integer", "minimum": 0},
            "iconURL": nullable_string,
            "guildId": snowflake,
            "guilds": {"type": "array", "minItems": 2,
                       "description": "Every guild of a bot in several, the default first.",
                       "items": obj({"id": snowflake, "name": string})},
        }, optional=("guilds",)),
        "Member": obj({
            "id": snowflake, "username": string, "displayName": string,
            "avatar": {"type": "string", "format": "uri"},
            "roles": {"type": "array", "items": string, "minItems": 1,
                      "description": "Role names, highest first, `@everyone` last."},
            "role": {"type": "string", "description": "The highest role's name."},
            "joinedAt": {"type": ["string", "null"], "format": "date-time"},
            "bot": {"type": "boolean"},
        }),
        "MemberList": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}},
        "Channel": obj({
            "id": snowflake, "name": string,
            "type": {"type": "string", "description": "Discord's channel type name: text, "
                                                      "voice, category, news, forum, ..."},
            "parentId": {"oneOf": [snowflake, {"type": "null"}]},
            "position": {"type": "integer"},
            "topic": nullable_string,
        }),
        "ChannelList": {"type": "array", "items": {"$ref": "#/components/schemas/Channel"}},
        "ChatMessage": obj({
            "id": snowflake, "content": string,
            "author": obj({"id": snowflake, "username": string, "name": string,
                           "avatar": {"type": "string", "format": "uri"}}),
            "timestamp": {"type": ["integer", "null"], "description": "Epoch milliseconds."},
            "editedTimestamp": {"type": ["integer", "null"]},
            "attachments": {"type": "array", "items": obj({
                "id": string, "filename": nullable_string, "url": nullable_string,
                "size": {"type": ["integer", "null"]}, "contentType": nullable_string})},
            "embeds": {"type": "integer", "minimum": 0, "description": "How many embeds."},
            "replyTo": {"oneOf": [snowflake, {"type": "null"}],
                        "description": "The id of the message this one answers."},
        }),
        "MessageList": {"type": "array", "items": {"$ref": "#/components/schemas/ChatMessage"}},
    }


def _header(description: str, schema: Json, required: bool = True) -> Json:
    return {"description": description, "required": required, "schema": schema}


def _header_components() -> Json:
    integer = {"type": "string", "pattern": "^[0-9]+$"}
    headers = {
        "X-Request-ID": _header("This request's id (yours, if sane).", {"type": "string"}),
        "Retry-After": _header("Seconds to wait before trying again.",
                               {"type": "string", "pattern": "^[1-9][0-9]*$"}),
        "RateLimit-Limit": _header("Requests allowed per window.", integer),
        "RateLimit-Remaining": _header("Requests left in the window.", integer),
        "RateLimit-Reset": _header("Seconds until the window frees a request.", integer),
        "RateLimit-Policy": _header("`<limit>;w=<window seconds>`.",
                                    {"type": "string", "pattern": "^[0-9]+;w=[0-9]+$"}),
        "ETag": _header("The list's entity tag.", {"type": "string", "pattern": '^"[^"]+"$'}),
        "Vary": _header("Names Accept-Encoding.", {"type": "string"}),
        "Content-Encoding": _header("`gzip` when the client accepts it.",
                                    {"type": "string", "const": "gzip"}),
        "WWW-Authenticate": _header("`Bearer realm=\"metrics\"`.", {"type": "string"}),
    }
    for name in (*_RATE_LIMIT_HEADERS, "Content-Encoding"):
        headers[f"{name}Optional"] = {**headers[name], "required": False}
    return headers


@functools.lru_cache(maxsize=8)
def _cached(settings: Settings) -> Json:
    paths: Json = {**_auth_paths(), **_data_paths(), **_page_paths()}
    security_schemes: Json = {"session": {
        "type": "apiKey", "in": "header", "name": "Authorization",
        "description": "The `sessionId` of a login, bare (as the original web client sends "
                       "it) or as `Bearer <sessionId>`."}}
    if settings.metrics_enabled:
        paths.update(_metrics_path(settings))
    if settings.metrics_token:
        security_schemes["metricsToken"] = {"type": "http", "scheme": "bearer",
                                            "description": "METRICS_TOKEN."}
    return {
        "openapi": "3.1.0",
        "info": {"title": "MemberSense", "version": _version(), "description": _DESCRIPTION,
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "tags": [{"name": name} for name in ("auth", "members", "channels", "messages",
                                             "health", "docs", "dashboard", "metrics")],
        "paths": paths,
        "components": {"schemas": _schemas(), "headers": _header_components(),
                       "securitySchemes": security_schemes},
    }


def build_document(settings: Settings) -> Json:
    """The OpenAPI document of the API served with *settings* (a fresh copy to keep or change)."""
    return copy.deepcopy(_cached(settings))
