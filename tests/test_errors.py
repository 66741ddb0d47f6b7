"""Every error is JSON with the right status, and never leaks exception text."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from membersense.discord import errors as discord_errors
from membersense.errors import DISCORD_STATUSES, ServiceUnavailable


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(MAX_CONTENT_LENGTH=1024)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("token=MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDE.secretsecretsecretsecretsecret")

    @app.get("/busy")
    def busy() -> None:
        raise ServiceUnavailable("Discord is rate limiting this bot", retry_after=2.2)

    @app.get("/upstream")
    def upstream() -> None:
        raise discord_errors.DiscordUnavailable()

    @app.get("/discord/<name>")
    def discord_error(name: str) -> None:
        raise getattr(discord_errors, name)()

    return app


def test_unknown_paths_are_json_404(client: FlaskClient) -> None:
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json() == {"error": "Not Found"}


def test_wrong_methods_are_json_405_with_allow(client: FlaskClient) -> None:
    response = client.delete("/api/members")
    assert response.status_code == 405
    assert response.get_json() == {"error": "Method Not Allowed"}
    assert "GET" in response.headers["Allow"]
    assert client.get("/api/auth/login").status_code == 405


def test_oversized_bodies_are_json_413(client: FlaskClient) -> None:
    response = client.post(
        "/api/auth/login", data=json.dumps({"token": "x" * 2000}), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.get_json() == {"error": "Request Entity Too Large"}


def test_unexpected_exceptions_are_500_without_text_or_traceback(
    client: FlaskClient, log_stream: io.StringIO
) -> None:
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal Server Error"}
    log = log_stream.getvalue()
    assert "RuntimeError" in log  # the operator learns what failed, and where
    assert "test_errors.py" in log
    assert "secret" not in log and "token=" not in log and "Traceback" not in log
    assert b"secret" not in response.data


def test_503_carries_retry_after(client: FlaskClient) -> None:
    response = client.get("/busy")
    assert response.status_code == 503
    assert response.get_json() == {"error": "Discord is rate limiting this bot", "retryAfter": 3}
    assert response.headers["Retry-After"] == "3"


def test_502_for_discord_failures(client: FlaskClient) -> None:
    response = client.get("/upstream")
    assert response.status_code == 502
    assert response.get_json() == {"error": "Discord is unavailable"}


def test_errors_carry_cors_and_request_id_headers(client: FlaskClient) -> None:
    response = client.get("/boom", headers={"Origin": "https://app.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("InvalidToken", 401),
        ("BotReleased", 401),
        ("MissingIntents", 400),
        ("NoGuilds", 400),
        ("NotMessageable", 400),
        ("MissingAccess", 403),
        ("GuildNotFound", 404),
        ("ChannelNotFound", 404),
        ("MessageNotFound", 404),
        ("RateLimited", 503),
        ("DailyLoginsUsed", 503),
        ("MembersLoading", 503),
        ("HeldBack", 503),
        ("Busy", 503),
        ("ServiceClosed", 503),
        ("Reconnecting", 503),
        ("DiscordUnavailable", 502),
        ("DiscordTimeout", 504),
    ],
)
def test_each_discord_error_has_its_status_and_own_message(
    client: FlaskClient, name: str, status: int
) -> None:
    response = client.get(f"/discord/{name}")
    assert response.status_code == status
    expected = getattr(discord_errors, name).default_message if name != "MissingIntents" else None
    body = response.get_json()
    if expected is not None:
        assert body["error"] == expected
    if status == 503:  # every 503 says when to come back
        assert int(response.headers["Retry-After"]) >= 1 and body["retryAfter"] >= 1
    else:
        assert "Retry-After" not in response.headers


def test_every_discord_error_class_is_in_the_status_table() -> None:
    classes = {
        cls
        for cls in vars(discord_errors).values()
        if isinstance(cls, type) and issubclass(cls, discord_errors.DiscordError)
    }
    assert classes == set(DISCORD_STATUSES)
