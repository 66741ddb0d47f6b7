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

__all__ = ["choice_arg", "int_arg", "json_body", "required_snowflake_arg", "snowflake_arg"]

_MAX_SNOWFLAKE = 2**64 - 1
# Bounded lengths: int() of an unbounded digit string is slow, and past 4300
# digits Python refuses it with ValueError.
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")
_INTEGER = re.compile(r"-?[0-9]{1,20}")


def snowflake_arg(name: str) -> int | None:
    """A Discord id from the query string; None when absent.

    0 is accepted: Discord's own cursors use ``after=0`` for "from the start".
    """
    raw = request.args.get(name)
    if raw is None:
        return None
    if not _SNOWFLAKE.fullmatch(raw) or int(raw) > _MAX_SNOWFLAKE:
        raise BadRequest(f"{name} must be a numeric Discord ID")
    return int(raw)


def required_snowflake_arg(name: str, missing_message: str) -> int:
    """A Discord id from the query string; 400 *missing_message* when absent or empty."""
    value = snowflake_arg(name) if request.args.get(name) else None
    if value is None:
        raise BadRequest(missing_message)
    return value


@overload
def int_arg(name: str, *, default: int, minimum: int, maximum: int) -> int: ...


@overload
def int_arg(name: str, *, default: None, minimum: int, maximum: int) -> int | None: ...


def int_arg(name: str, *, default: int | None, minimum: int, maximum: int) -> int | None:
    """An integer in [minimum, maximum] from the query string, or *default*."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise BadRequest(f"{name} must be an integer between {minimum} and {maximum}")
    return int(raw)


def choice_arg(name: str, choices: Iterable[str], *, default: str) -> str:
    """One of *choices* (in any case) from the query string, or *default*."""
    options = tuple(choices)
    raw = request.args.get(name)
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
    asked for more.
    """
    data = request.get_data(cache=True)
    if request.content_length is None:
        request.stream.read(1)  # b"" for a complete body; 413 past the limit
    try:
        return json.loads(data)
    except ValueError:  # also UnicodeDecodeError
        return None
