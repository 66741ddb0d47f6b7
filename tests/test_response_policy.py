"""Headers every response carries, the cache policy of guild data, OPTIONS and doubled slashes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

SECURITY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def assert_security_headers(headers: object) -> None:
    for name, value in SECURITY.items():
        assert headers[name] == value, name  # type: ignore[index]


@pytest.mark.parametrize(
    "path", ["/_ah/health", "/", "/dashboard/app.js", "/nowhere", "/api/members", "/api/nowhere"]
)
def test_every_response_carries_the_security_headers(client: FlaskClient, path: str) -> None:
    with client.get(path) as response:  # closes the static files
        assert_security_headers(response.headers)


def test_guild_data_is_private_and_revalidated_not_unstorable(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    session = login()
    for path in ("/api/members", "/api/channels", "/api/messages?channelId=500"):
        response = client.get(path, headers={"Authorization": session})
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "private, no-cache", path
        assert "Authorization" in response.headers["Vary"], path
        assert_security_headers(response.headers)
    members = client.get("/api/members", headers={"Authorization": session})
    assert {v.strip() for v in members.headers["Vary"].split(",")} >= {
        "Accept-Encoding",
        "Authorization",
    }
    revalidated = client.get(
        "/api/members", headers={"Authorization": session, "If-None-Match": members.headers["ETag"]}
    )
    assert revalidated.status_code == 304
    assert revalidated.headers["Cache-Control"] == "private, no-cache"
    assert "Authorization" in revalidated.headers["Vary"]


def test_login_and_logout_answers_are_never_stored(client: FlaskClient) -> None:
    login = client.post("/api/auth/login", json={"token": "good-token"})
    assert login.headers["Cache-Control"] == "no-store"
    logout = client.post(
        "/api/auth/logout", headers={"Authorization": login.get_json()["sessionId"]}
    )
    assert logout.headers["Cache-Control"] == "no-store"


def test_the_health_check_is_not_marked_private(client: FlaskClient) -> None:
    assert "Cache-Control" not in client.get("/_ah/health").headers


def test_options_is_204_with_allow_and_no_body(client: FlaskClient) -> None:
    response = client.options("/api/members")
    assert response.status_code == 204 and response.data == b""
    assert "Content-Type" not in response.headers
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


@pytest.mark.parametrize("path", ["/api//members", "/api/members/", "/_ah//health"])
def test_paths_are_matched_as_sent(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert (response.status_code, response.get_json()) == (404, {"error": "Not Found"})
