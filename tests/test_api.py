"""Request handling of every endpoint, against the fake Discord."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from membersense import runtime_of
from membersense.discord.errors import DiscordTimeout
from membersense.discord.tokens import fingerprint
from tests.fakes import FakeDiscord, make_guild


def auth(session_id: str) -> dict[str, str]:
    return {"Authorization": session_id}


def test_health_needs_no_session(client: FlaskClient) -> None:
    response = client.get("/_ah/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "healthy"}


def test_login_answers_what_the_web_client_reads(client: FlaskClient) -> None:
    response = client.post("/api/auth/login", json={"token": "good-token"})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"sessionId", "message", "serverName", "memberCount", "iconURL", "guildId"}
    assert body["message"] == "Logged in successfully"
    assert body["serverName"] == "Test Guild"
    assert body["memberCount"] == 5
    assert body["iconURL"] is None
    assert body["guildId"] == "100"
    assert len(body["sessionId"]) == 21


def test_login_lists_guilds_when_the_bot_is_in_several(
    make_app: Callable[..., Flask], discord: FakeDiscord
) -> None:
    discord.tokens["multi"] = [make_guild(1, "One"), make_guild(2, "Two")]
    body = make_app().test_client().post("/api/auth/login", json={"token": "multi"}).get_json()
    assert body["serverName"] == "One"
    assert body["guilds"] == [{"id": "1", "name": "One"}, {"id": "2", "name": "Two"}]


def test_login_accepts_a_token_pasted_with_the_bot_prefix(
    client: FlaskClient, discord: FakeDiscord
) -> None:
    assert client.post("/api/auth/login", json={"token": "Bot good-token"}).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": "{not json"}, "Invalid JSON payload"),
        ({"data": ""}, "Invalid JSON payload"),
        ({"json": ["token"]}, "Invalid JSON payload"),
        ({"json": {}}, "Token is required"),
        ({"json": {"token": ""}}, "Token is required"),
        ({"json": {"token": "   "}}, "Token is required"),
        ({"json": {"token": 12345}}, "Token is required"),
        ({"json": {"token": None}}, "Token is required"),
    ],
)
def test_login_rejects_bad_bodies(
    client: FlaskClient, kwargs: dict[str, object], message: str
) -> None:
    response = client.post("/api/auth/login", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


def test_login_reads_json_whatever_the_content_type(client: FlaskClient) -> None:
    response = client.post(
        "/api/auth/login", data='{"token": "good-token"}', content_type="text/plain"
    )
    assert response.status_code == 200


@pytest.mark.parametrize("token", ["wrong-token", "bad\ntoken", "a b", "x" * 300, "tök"])
def test_login_with_a_token_discord_would_reject_is_401(client: FlaskClient, token: str) -> None:
    response = client.post("/api/auth/login", json={"token": token})
    assert response.status_code == 401
    assert response.get_json() == {"error": "Invalid Discord token"}


def test_login_is_refused_when_the_server_is_full(make_app: Callable[..., Flask]) -> None:
    client = make_app(MAX_CONCURRENT_USERS=2).test_client()
    for _ in range(2):
        assert client.post("/api/auth/login", json={"token": "good-token"}).status_code == 200
    response = client.post("/api/auth/login", json={"token": "good-token"})
    assert response.status_code == 503
    assert response.get_json() == {
        "error": "Maximum number of concurrent users reached",
        "retryAfter": 60,
    }
    assert response.headers["Retry-After"] == "60"


def test_logout_destroys_the_session_and_its_discord_client(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord
) -> None:
    session_id = login()
    response = client.post("/api/auth/logout", headers=auth(session_id))
    assert response.status_code == 200
    assert response.get_json() == {"message": "Logged out successfully"}
    assert discord.released() == [fingerprint("good-token")]
    assert client.get("/api/members", headers=auth(session_id)).status_code == 401
    assert client.post("/api/auth/logout", headers=auth(session_id)).status_code == 401


@pytest.mark.parametrize("path", ["/api/members", "/api/channels", "/api/messages?channelId=1"])
@pytest.mark.parametrize(
    "header", [None, "", "nope", "Bearer ", "x" * 21, "Bearer abc", "Basic dXNlcjpwYXNz"]
)
def test_data_endpoints_need_a_live_session(
    client: FlaskClient, path: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "Unauthorized"}


def test_the_session_id_may_be_raw_or_a_bearer_token(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    session_id = login()
    assert client.get("/api/members", headers={"Authorization": session_id}).status_code == 200
    assert (
        client.get("/api/members", headers={"Authorization": f"Bearer {session_id}"}).status_code
        == 200
    )
    assert (
        client.get("/api/members", headers={"Authorization": f"bearer  {session_id} "}).status_code
        == 200
    )


def test_an_expired_session_is_unauthorized(
    client: FlaskClient, login: Callable[..., str], clock, discord: FakeDiscord
) -> None:
    session_id = login()
    clock.advance(30 * 60 + 1)
    assert client.get("/api/members", headers=auth(session_id)).status_code == 401
    assert discord.released() == [fingerprint("good-token")]


def test_members_are_served_with_an_etag_and_304_when_unchanged(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    headers = auth(login())
    first = client.get("/api/members", headers=headers)
    assert first.status_code == 200
    assert first.mimetype == "application/json"
    assert [m["username"] for m in first.get_json()] == [f"user{i}" for i in range(5)]
    etag = first.headers["ETag"]
    again = client.get("/api/members", headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    other = client.get("/api/members", headers={**headers, "If-None-Match": '"other"'})
    assert other.status_code == 200


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br, GZIP", True),
        ("*", True),
        ("gzip;q=0.5", True),
        ("*;q=0.5, br", True),
        (None, False),
        ("", False),
        ("identity", False),
        ("br, deflate", False),
        ("gzip;q=0", False),
        ("deflate;q=1, gzip;q=0", False),
    ],
)
def test_members_come_gzipped_when_the_client_accepts_gzip(
    make_app: Callable[..., Flask],
    discord: FakeDiscord,
    accept_encoding: str | None,
    gzipped: bool,
) -> None:
    import gzip

    from membersense.discord.service import JsonDocument

    plain_members = discord.members

    def members(*args, **kwargs) -> JsonDocument:
        document = plain_members(*args, **kwargs)
        return JsonDocument(document.etag, document.body, gzip.compress(document.body))

    discord.members = members  # type: ignore[method-assign]
    client = make_app().test_client()
    session = client.post("/api/auth/login", json={"token": "good-token"}).get_json()["sessionId"]
    headers = auth(session)
    if accept_encoding is not None:
        headers["Accept-Encoding"] = accept_encoding
    response = client.get("/api/members", headers=headers)
    assert response.status_code == 200
    assert (response.headers.get("Content-Encoding") == "gzip") is gzipped
    assert response.headers["ETag"].endswith('.gz"') is gzipped
    body = gzip.decompress(response.data) if gzipped else response.data
    assert len(json.loads(body)) == 5


def test_members_pagination_is_passed_through(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord
) -> None:
    headers = auth(login())
    response = client.get("/api/members?limit=2&after=1001", headers=headers)
    assert [m["id"] for m in response.get_json()] == ["1002", "1003"]
    assert discord.calls[-1] == ("members", (100,), {"limit": 2, "after": 1001})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit must be an integer between 1 and 1000"),
        ("limit=1001", "limit must be an integer between 1 and 1000"),
        ("limit=ten", "limit must be an integer between 1 and 1000"),
        ("limit=--5", "limit must be an integer between 1 and 1000"),
        ("limit=-5", "limit must be an integer between 1 and 1000"),
        ("limit=" + "9" * 5000, "limit must be an integer between 1 and 1000"),
        ("limit=%EF%BC%91", "limit must be an integer between 1 and 1000"),  # a fullwidth 1
        ("after=abc", "after must be a numeric Discord ID"),
        ("guildId=-5", "guildId must be a numeric Discord ID"),
        ("guildId=99999999999999999999999", "guildId must be a numeric Discord ID"),
        ("after=18446744073709551616", "after must be a numeric Discord ID"),
        ("after=" + "1" * 5000, "after must be a numeric Discord ID"),
    ],
)
def test_members_rejects_bad_parameters(
    client: FlaskClient, login: Callable[..., str], query: str, message: str
) -> None:
    response = client.get(f"/api/members?{query}", headers=auth(login()))
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


def test_after_zero_starts_from_the_first_member(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    response = client.get("/api/members?after=0&limit=2", headers=auth(login()))
    assert [m["id"] for m in response.get_json()] == ["1000", "1001"]


def test_a_guild_the_bot_is_not_in_is_404(client: FlaskClient, login: Callable[..., str]) -> None:
    response = client.get("/api/members?guildId=424242", headers=auth(login()))
    assert response.status_code == 404
    assert response.get_json() == {"error": "Guild not found"}


def test_channels_default_to_text_and_filter_by_type(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    headers = auth(login())
    assert [c["name"] for c in client.get("/api/channels", headers=headers).get_json()] == [
        "general"
    ]
    assert [
        c["name"] for c in client.get("/api/channels?type=voice", headers=headers).get_json()
    ] == ["Voice"]
    assert len(client.get("/api/channels?type=ALL", headers=headers).get_json()) == 2
    bad = client.get("/api/channels?type=forum", headers=headers)
    assert bad.status_code == 400
    assert bad.get_json() == {"error": "type must be one of text, voice, category, all"}


def test_messages_default_to_100_newest_first(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord
) -> None:
    response = client.get("/api/messages?channelId=500", headers=auth(login()))
    messages = response.get_json()
    assert len(messages) == 100
    assert messages[0]["content"] == "message 0"
    assert discord.calls[-1][2]["limit"] == 100


def test_messages_pass_one_cursor(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord
) -> None:
    response = client.get("/api/messages?channelId=500&limit=3&before=8990", headers=auth(login()))
    assert [m["id"] for m in response.get_json()] == ["8989", "8988", "8987"]
    assert discord.calls[-1] == (
        "messages",
        (100, 500),
        {"limit": 3, "before": 8990, "after": None, "around": None},
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "Channel ID is required"),
        ("channelId=", "Channel ID is required"),
        ("channelId=general", "channelId must be a numeric Discord ID"),
        ("channelId=500&limit=0", "limit must be an integer between 1 and 100"),
        ("channelId=500&limit=101", "limit must be an integer between 1 and 100"),
        ("channelId=500&before=1&after=2", "Use at most one of before, after and around"),
        ("channelId=500&around=x", "around must be a numeric Discord ID"),
        ("channelId=500&limit=--5", "limit must be an integer between 1 and 100"),
    ],
)
def test_messages_reject_bad_parameters(
    client: FlaskClient, login: Callable[..., str], query: str, message: str
) -> None:
    response = client.get(f"/api/messages?{query}", headers=auth(login()))
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


def test_messages_of_an_unknown_channel_are_404(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    response = client.get("/api/messages?channelId=777", headers=auth(login()))
    assert response.status_code == 404


def test_discord_errors_from_the_service_keep_their_status(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord
) -> None:
    headers = auth(login())
    discord.fail_with = DiscordTimeout()
    response = client.get("/api/channels", headers=headers)
    assert response.status_code == 504
    assert response.get_json() == {"error": "Discord did not respond in time"}


def test_a_login_that_fails_leaves_no_session(
    make_app: Callable[..., Flask], discord: FakeDiscord
) -> None:
    app = make_app()
    discord.login_fails_with = DiscordTimeout("Discord did not finish the login in time")
    response = app.test_client().post("/api/auth/login", json={"token": "good-token"})
    assert response.status_code == 504
    assert response.get_json() == {"error": "Discord did not finish the login in time"}
    assert runtime_of(app).store.count() == 0
    assert discord.released() == [fingerprint("good-token")]  # the pending slot let go


def test_sessions_of_a_bot_that_failed_for_good_end(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord, app: Flask
) -> None:
    session_id = login()
    discord.failures[fingerprint("good-token")] = DiscordTimeout().failure()
    assert client.get("/api/members", headers=auth(session_id)).status_code == 401
    assert runtime_of(app).store.count() == 0


def test_a_weak_validator_from_a_proxy_still_gets_304(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    headers = auth(login())
    etag = client.get("/api/members", headers=headers).headers["ETag"]
    again = client.get("/api/members", headers={**headers, "If-None-Match": f"W/{etag}"})
    assert again.status_code == 304


def test_a_bot_left_without_servers_cannot_log_in(
    make_app: Callable[..., Flask], discord: FakeDiscord
) -> None:
    discord.tokens["homeless"] = []
    app = make_app()
    response = app.test_client().post("/api/auth/login", json={"token": "homeless"})
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "The bot is not in any server: invite it to a server first"
    }
    assert runtime_of(app).store.count() == 0


@pytest.mark.parametrize(
    ("caps", "message"),
    [
        (
            {"MAX_SESSIONS_PER_TOKEN": 2},
            "Too many sessions are open with this bot token: log out of one first",
        ),
        (
            {"MAX_SESSIONS_PER_IP": 2},
            "Too many sessions are open from this address: log out of one first",
        ),
    ],
)
def test_per_token_and_per_address_caps_are_429_never_an_eviction(
    make_app: Callable[..., Flask], caps: dict[str, int], message: str
) -> None:
    client = make_app(**caps).test_client()
    sessions = [
        client.post("/api/auth/login", json={"token": "good-token"}).get_json()["sessionId"]
        for _ in range(2)
    ]
    refused = client.post("/api/auth/login", json={"token": "good-token"})
    assert refused.status_code == 429
    assert refused.get_json() == {"error": message, "retryAfter": 60}
    for session_id in sessions:  # nobody else's session was evicted
        assert client.get("/api/members", headers=auth(session_id)).status_code == 200
