"""Every error is JSON with the right status, and never leaks exception text."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from membersense.errors import DiscordUnavailable, ServiceUnavailable


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
        raise DiscordUnavailable()

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
    response = client.post("/api/auth/login", data=json.dumps({"token": "x" * 2000}),
                           content_type="application/json")
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
