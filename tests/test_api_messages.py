"""Sending, editing and deleting messages: request handling against the fake Discord."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from membersense.discord.errors import DiscordError, MissingAccess, RateLimited
from tests.fakes import FakeDiscord


def auth(session_id: str, **headers: str) -> dict[str, str]:
    return {"Authorization": session_id, **headers}


def calls(discord: FakeDiscord, name: str) -> list[tuple[Any, ...]]:
    return [(args, kwargs) for called, args, kwargs in discord.calls if called == name]


def test_a_sent_message_is_201_in_the_shape_of_get_messages(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord
) -> None:
    session = login()
    response = client.post(
        "/api/messages",
        headers=auth(session),
        json={"channelId": "500", "content": "hello <@1000> @everyone"},
    )
    assert response.status_code == 201
    sent = response.get_json()
    assert sent["content"] == "hello <@1000> @everyone" and sent["replyTo"] is None
    listed = client.get("/api/messages?channelId=500&limit=1", headers=auth(session)).get_json()
    assert listed == [sent]
    [(args, kwargs)] = calls(discord, "send_message")
    assert args == (100, 500, "hello <@1000> @everyone")
    # Mentions are inert unless asked for; no key, no idempotency.
    assert kwargs == {"reply_to": None, "allow_mentions": False, "idempotency_key": None}


def test_reply_mentions_and_the_idempotency_key_reach_the_service(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord
) -> None:
    session = login()
    body = {"channelId": 500, "content": "re", "replyTo": "8999", "allowMentions": True}
    first = client.post(
        "/api/messages", json=body, headers=auth(session, **{"Idempotency-Key": "order-7"})
    )
    again = client.post(
        "/api/messages", json=body, headers=auth(session, **{"Idempotency-Key": "order-7"})
    )
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    assert first.get_json()["replyTo"] == "8999"
    (_, kwargs), _ = calls(discord, "send_message")
    assert kwargs == {"reply_to": 8999, "allow_mentions": True, "idempotency_key": "order-7"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"content": "x"}, "Channel ID is required"),
        ({"channelId": "abc", "content": "x"}, "channelId must be a numeric Discord ID"),
        ({"channelId": "500"}, "content must be text of 1 to 2000 characters"),
        ({"channelId": "500", "content": ""}, "content must be text of 1 to 2000 characters"),
        ({"channelId": "500", "content": "   "}, "content must be text of 1 to 2000 characters"),
        (
            {"channelId": "500", "content": "x" * 2001},
            "content must be text of 1 to 2000 characters",
        ),
        ({"channelId": "500", "content": 5}, "content must be text of 1 to 2000 characters"),
        (
            {"channelId": "500", "content": "x", "replyTo": "no"},
            "replyTo must be a numeric Discord ID",
        ),
        (
            {"channelId": "500", "content": "x", "allowMentions": "yes"},
            "allowMentions must be true or false",
        ),
        ([1, 2], "Invalid JSON payload"),
    ],
)
def test_bad_sends_are_400_and_never_reach_discord(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord, body: Any, message: str
) -> None:
    response = client.post("/api/messages", json=body, headers=auth(login()))
    assert response.status_code == 400
    assert response.get_json() == {"error": message}
    assert calls(discord, "send_message") == []


def test_2000_characters_is_the_limit_not_beyond(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    response = client.post(
        "/api/messages", headers=auth(login()), json={"channelId": "500", "content": "é" * 2000}
    )
    assert response.status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "caf\u00e9"])
def test_a_bad_idempotency_key_is_400(
    client: FlaskClient, login: Callable[..., str], key: str
) -> None:
    response = client.post(
        "/api/messages",
        json={"channelId": "500", "content": "x"},
        headers=auth(login(), **{"Idempotency-Key": key}),
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["error"]


def test_sending_needs_a_session_and_a_known_channel(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    body = {"channelId": "500", "content": "x"}
    assert client.post("/api/messages", json=body).status_code == 401
    unknown = client.post(
        "/api/messages", json={"channelId": "1", "content": "x"}, headers=auth(login())
    )
    assert unknown.status_code == 404 and unknown.get_json() == {"error": "Channel not found"}


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (MissingAccess("The bot cannot send messages in this channel"), 403, None),
        (RateLimited(retry_after=2.5), 503, "3"),
    ],
)
def test_discord_refusals_map_to_statuses(
    client: FlaskClient,
    login: Callable[..., str],
    discord: FakeDiscord,
    error: DiscordError,
    status: int,
    retry_after: str | None,
) -> None:
    session = login()
    discord.fail_with = error
    response = client.post(
        "/api/messages", json={"channelId": "500", "content": "x"}, headers=auth(session)
    )
    assert response.status_code == status
    assert response.headers.get("Retry-After") == retry_after


def test_edit_and_delete_by_id_with_the_channel_in_the_query(
    client: FlaskClient, login: Callable[..., str], discord: FakeDiscord
) -> None:
    session = login()
    sent = client.post(
        "/api/messages", json={"channelId": "500", "content": "draft"}, headers=auth(session)
    ).get_json()
    edited = client.patch(
        f"/api/messages/{sent['id']}?channelId=500",
        json={"content": "final"},
        headers=auth(session),
    )
    assert edited.status_code == 200
    assert edited.get_json()["content"] == "final"
    assert edited.get_json()["editedTimestamp"] is not None
    [(_, kwargs)] = calls(discord, "edit_message")
    assert kwargs == {"allow_mentions": False}
    deleted = client.delete(f"/api/messages/{sent['id']}?channelId=500", headers=auth(session))
    assert deleted.status_code == 204 and deleted.data == b""
    again = client.delete(f"/api/messages/{sent['id']}?channelId=500", headers=auth(session))
    assert again.status_code == 404 and again.get_json() == {"error": "Message not found"}


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("patch", "/api/messages/1", {"content": "x"}, "Channel ID is required"),
        (
            "patch",
            "/api/messages/abc?channelId=500",
            {"content": "x"},
            "message id must be a numeric Discord ID",
        ),
        (
            "patch",
            "/api/messages/9000?channelId=500",
            {"content": ""},
            "content must be text of 1 to 2000 characters",
        ),
        ("delete", "/api/messages/9000", None, "Channel ID is required"),
        (
            "delete",
            "/api/messages/x?channelId=500",
            None,
            "message id must be a numeric Discord ID",
        ),
    ],
)
def test_bad_edits_and_deletes_are_400(
    client: FlaskClient, login: Callable[..., str], method: str, path: str, body: Any, message: str
) -> None:
    response = getattr(client, method)(path, json=body, headers=auth(login()))
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


def test_browsers_may_send_patch_delete_and_an_idempotency_key(client: FlaskClient) -> None:
    response = client.options(
        "/api/messages/1",
        headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "Authorization, Idempotency-Key",
        },
    )
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"PATCH", "DELETE"} <= methods
    assert "idempotency-key" in response.headers["Access-Control-Allow-Headers"].lower()
    allow = client.options("/api/messages").headers["Allow"]
    assert {"GET", "POST"} <= {m.strip() for m in allow.split(",")}
