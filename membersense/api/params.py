"""Request parsing for the API: one place that turns query strings and bodies into values or 4xx.

Query parameters are taken exactly as the OpenAPI document describes them: a
parameter that is present must be well formed (no surrounding spaces, no
empty value), or the answer is 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, overload

from flask import request

from membersense.errors import BadRequest
from membersense.gunicorn_compat import MALFORMED_BODY_ERRORS
from membersense.sessions import SessionRecord

__all__ = [
    "query_arg",
    "snowflake_arg",
    "required_snowflake_arg",
    "guild_arg",
    "int_arg",
    "choice_arg",
    "json_body",
    "json_object",
    "snowflake_field",
    "snowflake_path",
    "bool_field",
]

_MAX_SNOWFLAKE = 2**64 - 1
# Bounded lengths: int() of an unbounded digit string is slow, and past 4300
# digits Python refuses it with ValueError.
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")
_INTEGER = re.compile(r"-?[0-9]{1,20}")


def query_arg(name: str) -> str | None:
    """The query parameter *name* as sent (its first value), or None when absent."""
    args = request.args
    # Not args.get(): a MultiDict raises and catches an exception for each absent name,
    # and most requests name none of their optional parameters.
    return args[name] if name in args else None


def snowflake_arg(name: str) -> int | None:
    """A Discord id from the query string; None when absent.

    0 is accepted: Discord's own cursors use ``after=0`` for "from the start".
    """
    raw = query_arg(name)
    if raw is None:
        return None
    if not _SNOWFLAKE.fullmatch(raw) or int(raw) > _MAX_SNOWFLAKE:
        raise BadRequest(f"{name} must be a numeric Discord ID")
    return int(raw)


def required_snowflake_arg(name: str, missing_message: str) -> int:
    """A Discord id from the query string; 400 *missing_message* when absent or empty."""
    value = snowflake_arg(name) if query_arg(name) else None
    if value is None:
        raise BadRequest(missing_message)
    return value


def guild_arg(session: SessionRecord) -> int:
    """``guildId`` from the query string, or the session's default guild."""
    guild_id = snowflake_arg("guildId")
    if guild_id is not None:
        return guild_id
    default = session.default_guild_id
    assert default is not None  # a logged-in session has its bot's guilds
    return default


@overload
def int_arg(name: str, *, default: int, minimum: int, maximum: int) -> int: ...


@overload
def int_arg(name: str, *, default: None, minimum: int, maximum: int) -> int | None: ...


def int_arg(name: str, *, default: int | None, minimum: int, maximum: int) -> int | None:
    """An integer in [minimum, maximum] from the query string, or *default*."""
    raw = query_arg(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise BadRequest(f"{name} must be an integer between {minimum} and {maximum}")
    return int(raw)


def choice_arg(name: str, choices: Iterable[str], *, default: str) -> str:
    """One of *choices* (in any case) from the query string, or *default*."""
    options = tuple(choices)
    raw = query_arg(name)
    if raw is None:
        return default
    raw = raw.lower()
    if raw not in options:
        raise BadRequest(f"{name} must be one of {', '.join(options)}")
    return raw


def json_body() -> Any:
    """The body parsed as JSON, whatever its Content-Type (as the original); None if not JSON.

    A body over ``MAX_CONTENT_LENGTH`` is a 413, chunked ones too: werkzeug
    stops reading those at the limit without a word, and raises only when
    asked for more. A chunked body whose framing is broken is a 400 that
    closes the connection (where the next request would start is unknown),
    and JSON nested too deeply for the parser is a 400 too.
    """
    try:
        data = request.get_data(cache=True)
        if request.content_length is None:
            request.stream.read(1)  # b"" for a complete body; 413 past the limit
    except MALFORMED_BODY_ERRORS:
        error = BadRequest("Malformed request body")
        error.headers["Connection"] = "close"
        raise error from None
    try:
        return json.loads(data)
    except ValueError:  # also UnicodeDecodeError
        return None
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None


def json_object() -> dict[str, Any]:
    """The body as a JSON object; 400 ``Invalid JSON payload`` otherwise."""
    payload = json_body()
    if not isinstance(payload, dict):
        raise BadRequest("Invalid JSON payload")
    return payload


def _snowflake_value(value: Any) -> int | None:
    # Discord ids travel as strings; an integer is taken too.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _SNOWFLAKE.fullmatch(value) and int(value) <= _MAX_SNOWFLAKE:
        return int(value)
    return None


def snowflake_field(
    payload: dict[str, Any], name: str, *, missing_message: str | None = None
) -> int | None:
    """A Discord id from a JSON body; None when absent (400 *missing_message* if given)."""
    value = payload.get(name)
    if value is None:
        if missing_message is not None:
            raise BadRequest(missing_message)
        return None
    parsed = _snowflake_value(value)
    if parsed is None:
        raise BadRequest(f"{name} must be a numeric Discord ID")
    return parsed


def snowflake_path(name: str, value: str) -> int:
    """A Discord id from the URL path; 400 otherwise."""
    parsed = _snowflake_value(value)
    if parsed is None:
        raise BadRequest(f"{name} must be a numeric Discord ID")
    return parsed


def bool_field(payload: dict[str, Any], name: str, *, default: bool = False) -> bool:
    """A JSON boolean from the body, or *default* when absent."""
    value = payload.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value
