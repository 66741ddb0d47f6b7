"""Bulkheads: Discord-bound requests hold at most their share of the threads; the rest get 503 at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from membersense.bulkhead import Bulkhead, bulkhead
from membersense.config import load_settings
from membersense.errors import ServiceUnavailable
from tests.fakes import FakeDiscord


def test_a_bulkhead_admits_its_limit_and_refuses_the_next_at_once() -> None:
    head = Bulkhead("history", 2)
    with head, head:
        with pytest.raises(ServiceUnavailable) as refused, head:
            pass
        assert refused.value.code == 503
        assert refused.value.headers["Retry-After"] == "1"
    with head:  # slots come back when holders leave, errors included
        pass


def test_shares_default_to_an_eighth_of_the_threads() -> None:
    assert load_settings(environ={}).history_reads_share == 4  # THREADS=32
    assert load_settings(environ={"THREADS": "2"}).logins_share == 1  # never none
    settings = load_settings(environ={"THREADS": "16", "MAX_CONCURRENT_LOGINS": "6"})
    assert (settings.history_reads_share, settings.logins_share) == (2, 6)


def test_unknown_kinds_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        bulkhead("everything")


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    return thread, results


def test_logins_past_their_share_are_503_with_retry_after(
    make_app: Callable[..., Flask], discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(MAX_CONCURRENT_LOGINS=1)
    released, entered = threading.Event(), threading.Event()
    real_login = discord.login

    def slow_login(token: str) -> Any:  # Discord is slow: logins hang until released
        entered.set()
        released.wait(10)
        return real_login(token)

    monkeypatch.setattr(discord, "login", slow_login)
    held, results = _in_thread(
        lambda: app.test_client().post("/api/auth/login", json={"token": "good-token"})
    )
    try:
        assert entered.wait(10)
        refused = app.test_client().post("/api/auth/login", json={"token": "good-token"})
        assert refused.status_code == 503
        assert refused.get_json() == {
            "error": "Too many logins under way; try again shortly",
            "retryAfter": 1,
        }
        assert refused.headers["Retry-After"] == "1"
        assert app.test_client().get("/_ah/health").status_code == 200  # others: unaffected
    finally:
        released.set()
        held.join(10)
    assert results[0].status_code == 200
    assert (
        app.test_client().post("/api/auth/login", json={"token": "good-token"}).status_code == 200
    )


def test_history_reads_past_their_share_are_503_and_members_are_served(
    make_app: Callable[..., Flask],
    discord: FakeDiscord,
    login: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(MAX_CONCURRENT_HISTORY_READS=1)
    client = app.test_client()
    session = login(test_client=client)
    released, entered = threading.Event(), threading.Event()
    real_messages = discord.messages

    def slow_messages(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        released.wait(10)
        return real_messages(*args, **kwargs)

    monkeypatch.setattr(discord, "messages", slow_messages)
    headers = {"Authorization": session}
    held, results = _in_thread(
        lambda: app.test_client().get("/api/messages?channelId=500", headers=headers)
    )
    try:
        assert entered.wait(10)
        refused = client.get("/api/messages?channelId=500", headers=headers)
        assert refused.status_code == 503
        assert refused.get_json()["error"] == (
            "Too many message reads waiting on Discord; try again shortly"
        )
        assert refused.headers["Retry-After"] == "1"
        assert client.get("/api/members", headers=headers).status_code == 200
    finally:
        released.set()
        held.join(10)
    assert results[0].status_code == 200


def test_sends_past_their_share_are_503_and_reads_are_served(
    make_app: Callable[..., Flask],
    discord: FakeDiscord,
    login: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(MAX_CONCURRENT_SENDS=1)
    client = app.test_client()
    session = login(test_client=client)
    released, entered = threading.Event(), threading.Event()
    real_send = discord.send_message

    def slow_send(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        released.wait(10)
        return real_send(*args, **kwargs)

    monkeypatch.setattr(discord, "send_message", slow_send)
    headers = {"Authorization": session}
    body = {"channelId": "500", "content": "hello"}
    held, results = _in_thread(
        lambda: app.test_client().post("/api/messages", json=body, headers=headers)
    )
    try:
        assert entered.wait(10)
        refused = client.post("/api/messages", json=body, headers=headers)
        assert refused.status_code == 503
        assert refused.get_json()["error"] == (
            "Too many messages being sent to Discord; try again shortly"
        )
        assert refused.headers["Retry-After"] == "1"
        assert client.get("/api/messages?channelId=500", headers=headers).status_code == 200
    finally:
        released.set()
        held.join(10)
    assert results[0].status_code == 201
