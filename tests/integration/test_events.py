"""Sending, live events and webhooks under gunicorn, against the sandbox, through discord.py:
messages posted through the API reach Discord; what happens in Discord reaches event streams,
long-polls and a webhook receiver; streams resume, reset, are capped and end with their session.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from membersense.sandbox.server import SandboxServer
from tests.contract import served_contract
from tests.integration.conftest import DISCORD_TIMEOUT_S, MemberSense
from tests.integration.support import (
    MAIN_TOKEN,
    Api,
    Control,
    call,
    general,
    newcomer,
    sandbox_messages,
    stream,
    until,
    wait_until,
)
from tests.receiver import Receiver, running_receiver
from tests.sse import FrameReader


@pytest.fixture(scope="module")
def app_server(membersense_factory: Callable[..., MemberSense]) -> MemberSense:
    """MemberSense that may deliver webhooks to this machine, with a small event buffer."""
    return membersense_factory(WEBHOOK_ALLOW_PRIVATE="1", EVENT_BUFFER_SIZE="10")


@pytest.fixture(scope="module")
def guarded_server(membersense_factory: Callable[..., MemberSense]) -> MemberSense:
    """MemberSense with the default SSRF guard and room for two event streams."""
    return membersense_factory(MAX_EVENT_STREAMS="2")


@pytest.fixture(scope="module", autouse=True)
def keeper(app_server: MemberSense) -> Iterator[None]:
    """The main bot stays logged in for the module (one gateway connection throughout)."""
    assert app_server.api is not None
    session = app_server.api.login(MAIN_TOKEN)
    yield
    app_server.api.logout(session)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def test_a_message_sent_through_the_api_is_in_discord_and_in_the_history(
    api: Api, sandbox: SandboxServer, control: Control
) -> None:
    session = api.login()
    channel = general(api, session)
    with stream(api, session) as frames:
        sent = call(
            api,
            "POST",
            "/api/messages",
            session,
            json={"channelId": channel, "content": "hello from the API @everyone"},
        )
        assert sent.status_code == 201, sent.text
        message = sent.json()
        stored = sandbox_messages(sandbox, channel)[-1]
        assert stored["id"] == message["id"] and stored["author"] == "Main Bot"
        assert stored["content"] == "hello from the API @everyone" and stored["mentions"] == []
        history = api.get("/api/messages", session, channelId=channel, limit=1).json()
        assert history == [message]
        created = until(frames, lambda f: f.event == "message.create")
        assert created.json() == message
        edited = call(
            api,
            "PATCH",
            f"/api/messages/{message['id']}",
            session,
            params={"channelId": channel},
            json={"content": "edited"},
        )
        assert edited.status_code == 200 and edited.json()["content"] == "edited"
        assert until(frames, lambda f: f.event == "message.update").json()["content"] == "edited"
        deleted = call(
            api, "DELETE", f"/api/messages/{message['id']}", session, params={"channelId": channel}
        )
        assert deleted.status_code == 204
        assert until(frames, lambda f: f.event == "message.delete").json() == {
            "id": message["id"],
            "channelId": channel,
        }


def test_an_idempotency_key_retried_after_a_timeout_posts_one_message(
    api: Api, sandbox: SandboxServer, control: Control
) -> None:
    session = api.login()
    channel = general(api, session)
    body = {"channelId": channel, "content": "charge the card once"}
    key = {"Idempotency-Key": f"charge-{time.time_ns()}"}
    # Discord is slow to answer the first try: MemberSense gives up (504) while Discord
    # still makes the message; the client retries with the same key.
    delay_s = DISCORD_TIMEOUT_S + 1.5
    control.request(
        "POST",
        "/faults",
        count=1,
        path=f"/channels/{channel}/messages",
        delay_ms=int(delay_s * 1000),
    )
    started = time.monotonic()
    first = call(api, "POST", "/api/messages", session, json=body, headers=key)
    assert first.status_code == 504, first.text
    retried = call(api, "POST", "/api/messages", session, json=body, headers=key)
    assert retried.status_code == 201
    again = call(api, "POST", "/api/messages", session, json=body, headers=key)
    assert again.json()["id"] == retried.json()["id"]
    # Once the slow first try has been answered too, still one message.
    time.sleep(max(0.0, started + delay_s + 0.5 - time.monotonic()))
    copies = [
        m for m in sandbox_messages(sandbox, channel) if m["content"] == "charge the card once"
    ]
    assert [m["id"] for m in copies] == [retried.json()["id"]]
    assert copies[0]["nonce"] is not None
    plain = call(api, "POST", "/api/messages", session, json=body)  # no key: a new message
    assert plain.json()["id"] != retried.json()["id"]


def test_discord_events_reach_a_stream_and_a_signed_webhook(
    api: Api, control: Control, receiver: Receiver
) -> None:
    session = api.login()
    channel = general(api, session)
    hook = call(
        api,
        "POST",
        "/api/webhooks",
        session,
        json={"url": receiver.url, "events": ["member.join", "message.create"]},
    )
    assert hook.status_code == 201, hook.text
    secret = hook.json()["secret"]
    alpha = control.guild_id("Alpha")
    name = newcomer()
    with stream(api, session) as frames:
        added = control.request("POST", f"/guilds/{alpha}/members", username=name)
        posted = control.request(
            "POST",
            f"/channels/{channel}/messages",
            author_id=added["user"]["id"],
            content="first post!",
        )
        joined = until(frames, lambda f: f.event == "member.join")
        assert joined.json()["username"] == name and joined.json()["id"] == added["user"]["id"]
        said = until(frames, lambda f: f.event == "message.create")
        assert said.json()["id"] == posted["id"] and said.json()["content"] == "first post!"
        assert said.json()["author"]["username"] == name
    deliveries = receiver.wait_for(2)
    for delivery in deliveries:
        served_contract(api.base_url).check_delivery(delivery.headers, delivery.body)
    assert [d.headers["X-MemberSense-Event"] for d in deliveries] == [
        "member.join",
        "message.create",
    ]
    assert all(d.signed_with(secret) for d in deliveries)
    assert [d.json()["id"] for d in deliveries] == [joined.id, said.id]  # the stream's ids
    assert deliveries[1].json()["data"] == said.json()
    listed = api.get("/api/webhooks", session).json()
    assert listed[0]["lastDeliveryAt"] is not None and listed[0]["failures"] == 0


def test_a_receivers_500_is_retried_with_the_same_delivery(
    api: Api, control: Control, receiver: Receiver
) -> None:
    session = api.login()
    hook = call(
        api, "POST", "/api/webhooks", session, json={"url": receiver.url, "events": ["member.join"]}
    ).json()
    receiver.answers = [500]
    control.request("POST", f"/guilds/{control.guild_id('Alpha')}/members", username=newcomer())
    failed, retried = receiver.wait_for(2)
    served_contract(api.base_url).check_delivery(retried.headers, retried.body)
    assert (failed.status, retried.status) == (500, 200)
    assert failed.json() == retried.json() and retried.signed_with(hook["secret"])
    assert failed.headers["X-MemberSense-Delivery"] == retried.headers["X-MemberSense-Delivery"]
    listed = wait_until(
        lambda: (h := api.get("/api/webhooks", session).json()[0])["lastDeliveryAt"] and h,
        what="the delivery to be recorded",
    )
    assert listed["failures"] == 0 and listed["active"] is True


def test_a_stream_resumes_after_its_last_event_id(api: Api, control: Control) -> None:
    session = api.login()
    channel = general(api, session)
    with stream(api, session) as frames:
        control.request("POST", f"/channels/{channel}/messages", content="seen")
        seen = until(frames, lambda f: f.event == "message.create")
    missed = [
        control.request("POST", f"/channels/{channel}/messages", content=f"missed {n}")
        for n in range(2)
    ]
    with stream(api, session, **{"Last-Event-ID": seen.id or ""}) as frames:
        got = [until(frames, lambda f: f.event == "message.create") for _ in missed]
    assert [f.json()["id"] for f in got] == [m["id"] for m in missed]


def test_a_resume_point_that_fell_out_of_the_buffer_is_a_reset(api: Api, control: Control) -> None:
    session = api.login()
    channel = general(api, session)
    cursor = api.get("/api/events/poll", session).headers["X-Event-Cursor"]
    for n in range(12):  # EVENT_BUFFER_SIZE is 10 here
        control.request("POST", f"/channels/{channel}/messages", content=f"flood {n}")

    def overflowed() -> dict[str, Any] | None:
        answer = api.get("/api/events/poll", session, after=cursor).json()
        return answer if isinstance(answer, dict) else None

    reset = wait_until(overflowed, what="the buffer to overflow")
    assert reset["reset"] is True
    with stream(api, session, **{"Last-Event-ID": cursor}) as frames:
        first = frames.next_event()
        # The id to go on from: the newest event (the last of the flood, or later).
        assert first.event == "reset" and first.id and first.json() == {}
        control.request("POST", f"/channels/{channel}/messages", content="after the reset")
        assert (
            until(frames, lambda f: f.event == "message.create").json()["content"]
            == "after the reset"
        )


def test_a_long_poll_waits_for_the_next_event(api: Api, control: Control) -> None:
    session = api.login()
    channel = general(api, session)
    cursor = api.get("/api/events/poll", session).headers["X-Event-Cursor"]
    # Posted while the poll waits.
    poster = threading.Timer(
        0.5,
        lambda: control.request("POST", f"/channels/{channel}/messages", content="worth the wait"),
    )
    poster.start()
    answer = api.get("/api/events/poll", session, after=cursor, wait=20)
    poster.join()
    events = answer.json()
    assert [e["type"] for e in events][-1:] == ["message.create"]
    assert events[-1]["data"]["content"] == "worth the wait"
    assert answer.headers["X-Event-Cursor"] == events[-1]["id"]


def test_a_ticket_opens_a_stream_once_without_the_session_in_the_url(
    api: Api, control: Control
) -> None:
    session = api.login()
    ticket = call(api, "POST", "/api/events/ticket", session).json()["ticket"]
    url = f"{api.base_url}/api/events?ticket={ticket}"
    with api.http.get(url, stream=True, timeout=(10, 30)) as response:
        assert response.status_code == 200
        assert next(FrameReader(response.iter_content(chunk_size=None))).comments == ["connected"]
    assert api.http.get(url, timeout=10).status_code == 401


def test_logout_ends_streams_and_subscriptions(
    api: Api, control: Control, receiver: Receiver
) -> None:
    leaving, staying = api.login(), api.login()
    for session in (leaving, staying):
        call(
            api,
            "POST",
            "/api/webhooks",
            session,
            json={"url": f"{receiver.url}?session={session[:6]}", "events": ["member.join"]},
        )
    with stream(api, leaving) as frames:
        api.logout(leaving)
        assert frames.rest()[-1].event == "end"
    assert api.get("/api/webhooks", leaving).status_code == 401
    control.request("POST", f"/guilds/{control.guild_id('Alpha')}/members", username=newcomer())
    [delivery] = receiver.wait_for(1)
    assert delivery.path == f"/hook?session={staying[:6]}"
    wait_until(
        lambda: api.get("/api/webhooks", staying).json()[0]["lastDeliveryAt"],
        what="the delivery to be recorded",
    )
    assert len(receiver.deliveries) == 1  # none for the session that logged out


def test_private_webhook_urls_are_refused(guarded_server: MemberSense) -> None:
    api = guarded_server.api
    assert api is not None
    session = api.login(MAIN_TOKEN)
    try:
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://10.1.1.1/",
        ):
            refused = call(
                api, "POST", "/api/webhooks", session, json={"url": url, "events": ["member.join"]}
            )
            assert refused.status_code == 400, url
            assert "private" in refused.json()["error"]
        assert api.get("/api/webhooks", session).json() == []
    finally:
        api.logout(session)


def test_past_the_stream_cap_new_streams_wait_and_reads_go_on(guarded_server: MemberSense) -> None:
    api = guarded_server.api
    assert api is not None
    session = api.login(MAIN_TOKEN)
    try:
        with stream(api, session), stream(api, session):
            refused = api.get("/api/events", session)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
            assert refused.json() == {
                "error": "Too many event streams are open; try again shortly",
                "retryAfter": 5,
            }
            assert api.get("/api/events/poll", session, wait=5).status_code == 503
            assert api.get("/api/channels", session).status_code == 200
            assert api.get("/api/events/poll", session).status_code == 200
            assert api.http.get(f"{api.base_url}/_ah/health", timeout=10).status_code == 200
            members = api.get("/api/members", session)
            assert members.status_code in (200, 503)  # 503 only while its list still loads
    finally:
        api.logout(session)
    # The streams end with their session: there is room again.
    session = api.login(MAIN_TOKEN)

    def waiting_poll(_: int) -> int:
        return requests.get(
            f"{api.base_url}/api/events/poll",
            params={"wait": 1},
            timeout=30,
            headers={"Authorization": session},
        ).status_code

    def room_for_two() -> bool:
        # Two long-polls waiting at once take the cap's two places and give them back when
        # answered. (Probing with streams would hold a place after a refused try: the server
        # hears a client closed an idle stream only at its next heartbeat.)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            return list(pool.map(waiting_poll, range(2))) == [200, 200]

    try:
        wait_until(room_for_two, what="the logged-out session's streams to end")
    finally:
        api.logout(session)
