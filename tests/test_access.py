"""Request ids and the access log; tokens never reach a log."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient


def log_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_valid_request_id_is_echoed(client: FlaskClient) -> None:
    response = client.get("/_ah/health", headers={"X-Request-ID": "abc-123_DEF"})
    assert response.headers["X-Request-ID"] == "abc-123_DEF"


@pytest.mark.parametrize(
    "bad",
    [
        "x" * 129,
        "has space",
        "tab\there",
        "ünïcode",
        "<script>",
        'quote"d',
        "back\\slash",
        "{braces}",
    ],
)
def test_an_invalid_request_id_is_replaced(client: FlaskClient, bad: str) -> None:
    response = client.get("/_ah/health", headers={"X-Request-ID": bad})
    request_id = response.headers["X-Request-ID"]
    assert request_id != bad and len(request_id) == 21


def test_one_access_line_per_request_with_its_fields(
    client: FlaskClient, login: Callable[..., str], log_stream: io.StringIO
) -> None:
    session_id = login()
    log_stream.truncate(0)
    log_stream.seek(0)
    response = client.get(
        "/api/channels?type=all", headers={"Authorization": session_id, "X-Request-ID": "req-1"}
    )
    access = [e for e in log_lines(log_stream) if e["logger"] == "membersense.access"]
    assert len(access) == 1
    entry = access[0]
    assert entry["severity"] == "INFO"
    assert entry["method"] == "GET"
    assert entry["path"] == "/api/channels"  # never the query string
    assert entry["status"] == response.status_code == 200
    assert entry["request_id"] == "req-1"
    assert entry["session"] == session_id[:6]
    assert isinstance(entry["duration_ms"], float)


def test_the_token_never_reaches_a_log_or_a_response(
    make_app: Callable[..., Flask], log_stream: io.StringIO
) -> None:
    token = "MTE0NTE0MTkxOTgxMDg5MzQ0MA.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789"
    client = make_app(LOG_LEVEL="DEBUG").test_client()
    responses = [
        client.post("/api/auth/login", json={"token": token}),
        client.post("/api/auth/login", json={"token": token + " extra"}),
        client.post(f"/api/{token}", json={"token": token}),
    ]
    assert [r.status_code for r in responses] == [401, 401, 404]
    assert all(token.encode() not in r.data for r in responses)
    assert token not in log_stream.getvalue()
    assert token[:20] not in log_stream.getvalue()


def test_text_log_format(make_app: Callable[..., Flask], log_stream: io.StringIO) -> None:
    make_app(LOG_FORMAT="text").test_client().get("/_ah/health", headers={"X-Request-ID": "r2"})
    line = log_stream.getvalue().strip().splitlines()[-1]
    assert "membersense.access" in line and "request_id=r2" in line and "status=200" in line


def test_a_path_cannot_forge_a_text_log_line(
    make_app: Callable[..., Flask], log_stream: io.StringIO
) -> None:
    client = make_app(LOG_FORMAT="text").test_client()
    client.get("/x%0A2026-01-01 00:00:00 INFO    membersense.access: GET /admin 200")
    lines = log_stream.getvalue().strip().splitlines()
    assert len(lines) == 1
    assert "\\x0a2026-01-01" in lines[0]


def test_other_libraries_warnings_are_formatted_and_filtered(
    make_app: Callable[..., Flask], log_stream: io.StringIO
) -> None:
    import logging

    make_app()
    token = "MTE0NTE0MTkxOTgxMDg5MzQ0MA.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789"
    try:
        raise RuntimeError(f"boom {token}")
    except RuntimeError:
        # As asyncio logs it (error with exc_info), not logger.exception.
        logging.getLogger("asyncio").error(
            "Task exception was never retrieved %s", token, exc_info=True
        )
    entry = json.loads(log_stream.getvalue().strip().splitlines()[-1])
    assert entry["logger"] == "asyncio" and entry["exception"] == "RuntimeError"
    assert token not in log_stream.getvalue() and "Traceback" not in log_stream.getvalue()


def test_discordpy_reconnects_are_warnings_not_errors(
    make_app: Callable[..., Flask], log_stream: io.StringIO
) -> None:
    import logging

    make_app()
    try:
        raise ConnectionResetError("dropped")
    except ConnectionResetError:
        # discord.client's own words when a gateway connection drops and it resumes.
        logging.getLogger("discord.client").exception("Attempting a reconnect in %.2fs", 1.23)
    logging.getLogger("discord.client").error("Something else went wrong")
    first, second = (json.loads(line) for line in log_stream.getvalue().strip().splitlines()[-2:])
    assert first["severity"] == "WARNING" and first["message"] == "Attempting a reconnect in 1.23s"
    assert first["exception"] == "ConnectionResetError"
    assert second["severity"] == "ERROR"  # only that message is lowered


def test_request_ids_are_unique_and_change_prefix_in_a_forked_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from membersense import access

    ids = access._RequestIds()
    made = [ids.next() for _ in range(1000)]
    assert len(set(made)) == 1000 and all(len(i) == 21 for i in made)
    assert len({i[:12] for i in made}) == 1  # one prefix per process ...
    parent = os.getpid()
    monkeypatch.setattr(access.os, "getpid", lambda: parent + 1)  # a child gunicorn forked
    in_child = ids.next()
    assert len(in_child) == 21 and in_child[:12] != made[0][:12]
    assert in_child not in made
