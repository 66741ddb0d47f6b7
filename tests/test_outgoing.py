"""The bodies MemberSense sends to Discord's message endpoints: inert mentions by default, replies,
nonces, all valid against Discord's own OpenAPI document."""

from __future__ import annotations

import pytest

from membersense.discord.outgoing import MAX_CONTENT, create_body, edit_body, nonce_for
from tests.sandbox.test_openapi import OpenApi

CREATE = "/channels/{channel_id}/messages"
EDIT = "/channels/{channel_id}/messages/{message_id}"


@pytest.fixture(scope="module")
def openapi() -> OpenApi:
    return OpenApi()


def test_a_plain_message_pings_no_one(openapi: OpenApi) -> None:
    body = create_body(5, "hi @everyone")
    assert body == {
        "content": "hi @everyone",
        "allowed_mentions": {"parse": [], "replied_user": False},
    }
    openapi.check_request_body("POST", CREATE, body)


def test_allowing_mentions_hands_them_to_discords_rules(openapi: OpenApi) -> None:
    body = create_body(5, "hi", allow_mentions=True)
    assert body["allowed_mentions"] == {
        "parse": ["everyone", "roles", "users"],
        "replied_user": True,
    }
    openapi.check_request_body("POST", CREATE, body)


def test_a_reply_with_an_idempotency_nonce(openapi: OpenApi) -> None:
    body = create_body(5, "x" * MAX_CONTENT, reply_to=9, nonce=nonce_for(5, "key"))
    assert body["message_reference"] == {
        "message_id": "9",
        "channel_id": "5",
        "fail_if_not_exists": True,
    }
    assert body["enforce_nonce"] is True and body["nonce"] == nonce_for(5, "key")
    openapi.check_request_body("POST", CREATE, body)


def test_an_edit_keeps_mentions_inert_too(openapi: OpenApi) -> None:
    body = edit_body("new text")
    assert body == {"content": "new text", "allowed_mentions": {"parse": [], "replied_user": False}}
    openapi.check_request_body("PATCH", EDIT, body)
    openapi.check_request_body("PATCH", EDIT, edit_body("new", allow_mentions=True))


def test_the_schema_check_can_fail(openapi: OpenApi) -> None:
    with pytest.raises(AssertionError):
        openapi.check_request_body("POST", CREATE, {"content": 5, "nonce": "n" * 26})


def test_nonces_fit_discord_and_depend_on_key_and_channel() -> None:
    nonce = nonce_for(5, "order-1")
    assert len(nonce) == 25 and nonce.isascii()
    assert nonce == nonce_for(5, "order-1")
    assert len({nonce, nonce_for(6, "order-1"), nonce_for(5, "order-2")}) == 3
    assert len(nonce_for(5, "k" * 255)) == 25
