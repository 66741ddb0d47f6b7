"""What reaches the log: no discord.py payloads, no unbounded or line-breaking client text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import pytest
from flask import Flask

from membersense.logs import MAX_MESSAGE_CHARS, PAYLOAD_OMITTED


def entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


MEMBER_CHUNK = {
    "op": 0,
    "t": "GUILD_MEMBERS_CHUNK",
    "d": {"members": [{"user": {"id": "1", "username": "secret_member_name"}}]},
}


@pytest.mark.parametrize(
    ("logger", "message", "args"),
    [
        ("discord.gateway", "For Shard ID %s: WebSocket Event: %s", (None, MEMBER_CHUNK)),
        ("discord.gateway", "%s", ({"content": "secret message content"},)),
        (
            "discord.http",
            "%s %s has received %s",
            ("GET", "https://discord.com/api/v10/channels/1/messages", [{"content": "secret msg"}]),
        ),
        (
            "discord.http",
            "%s %s with %s has returned %s",
            (
                "POST",
                "https://discord.com/api/v10/channels/1/messages",
                '{"content": "secret text"}',
                200,
            ),
        ),
    ],
)
def test_discord_payloads_stay_out_of_the_log_even_at_debug(
    make_app: Callable[..., Flask],
    log_stream: io.StringIO,
    logger: str,
    message: str,
    args: tuple[object, ...],
) -> None:
    make_app(LOG_LEVEL="DEBUG")
    logging.getLogger(logger).debug(message, *args)
    [entry] = entries(log_stream)
    assert entry["severity"] == "DEBUG" and entry["logger"] == logger
    assert "secret" not in str(entry["message"])
    assert PAYLOAD_OMITTED in str(entry["message"])


def test_what_is_not_a_payload_is_kept(
    make_app: Callable[..., Flask], log_stream: io.StringIO
) -> None:
    make_app(LOG_LEVEL="DEBUG")
    logging.getLogger("discord.http").debug(
        "%s %s has returned %s", "GET", "https://discord.com/api/v10/users/@me", 200
    )
    [entry] = entries(log_stream)
    assert entry["message"] == "GET https://discord.com/api/v10/users/@me has returned 200"


def test_a_long_message_is_cut(make_app: Callable[..., Flask], log_stream: io.StringIO) -> None:
    make_app()
    logging.getLogger("membersense.test").warning("%s", "x" * 10_000)
    [entry] = entries(log_stream)
    assert len(str(entry["message"])) < MAX_MESSAGE_CHARS + 20


@pytest.mark.parametrize("breaker", ["\x85", "\u2028", "\u2029", "\x1b[31m"])
def test_text_lines_escape_what_could_break_or_color_a_line(
    make_app: Callable[..., Flask], log_stream: io.StringIO, breaker: str
) -> None:
    make_app(LOG_FORMAT="text")
    logging.getLogger("membersense.test").warning("before%safter", breaker)
    line = log_stream.getvalue().rstrip("\n")
    assert breaker not in line and "before\\" in line
    assert len(line.splitlines()) == 1


@pytest.mark.parametrize("breaker", ["\x85", "\u2028", "\u2029", "\n", "\x1b[31m"])
def test_json_lines_escape_what_could_break_or_color_a_line(
    make_app: Callable[..., Flask], log_stream: io.StringIO, breaker: str
) -> None:
    make_app()
    logging.getLogger("membersense.test").warning("before%safter é", breaker)
    line = log_stream.getvalue().rstrip("\n")
    assert breaker not in line and len(line.splitlines()) == 1
    assert json.loads(line)["message"] == f"before{breaker}after é"  # the same text back


def test_long_paths_are_cut_in_the_access_log(
    make_app: Callable[..., Flask], log_stream: io.StringIO
) -> None:
    make_app().test_client().get("/" + "a" * 5000)
    access = [e for e in entries(log_stream) if e["logger"] == "membersense.access"]
    assert len(str(access[0]["path"])) < 300
