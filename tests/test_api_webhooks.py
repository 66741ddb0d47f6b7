"""``/api/webhooks``: registration, the URL rules and the SSRF guard, listing, deleting, and
deliveries of events published on the app's bus to a real receiver (fake Discord)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from membersense import runtime_of
from membersense.bus import topic_of
from membersense.discord.tokens import fingerprint
from tests.fakes import FakeClock, FakeDiscord, make_guild
from tests.integration.support import wait_until
from tests.receiver import Receiver, running_receiver

TOPIC = topic_of(fingerprint("good-token"), 100)
#: A public address: it passes the guard without any DNS (nothing is ever sent to it).
PUBLIC_URL = "https://93.184.216.34/hooks/membersense"


def auth(session_id: str) -> dict[str, str]:
    return {"Authorization": session_id}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@pytest.fixture
def open_app(make_app: Callable[..., Flask]) -> Flask:
    """An app that may deliver to 127.0.0.1 (the test receiver)."""
    return make_app(WEBHOOK_ALLOW_PRIVATE="1")


def register(
    client: FlaskClient,
    session: str,
    url: str = PUBLIC_URL,
    events: Any = ("member.join", "message.create"),
    path: str = "/api/webhooks",
) -> Any:
    return client.post(
        path, headers=auth(session), json={"url": url, "events": list(events) if events else events}
    )


def test_registering_answers_the_secret_once(
    client: FlaskClient, login: Callable[..., str]
) -> None:
    session = login()
    created = register(client, session)
    assert created.status_code == 201
    body = created.get_json()
    assert body["url"] == PUBLIC_URL and body["events"] == ["member.join", "message.create"]
    assert body["guildId"] == "100" and body["active"] is True and body["failures"] == 0
    assert body["secret"].startswith("whsec_") and len(body["id"]) == 21
    assert created.headers["Cache-Control"] == "no-store"  # a secret: no cache keeps it
    listed = client.get("/api/webhooks", headers=auth(session))
    assert listed.headers["Cache-Control"] == "private, no-cache"
    listed = listed.get_json()
    assert listed == [{k: v for k, v in body.items() if k != "secret"}]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.0.0.7/hook",
        "http://192.168.1.20/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
    ],
)
def test_private_addresses_are_refused(
    client: FlaskClient, login: Callable[..., str], url: str
) -> None:
    response = register(client, login(), url)
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "url must not lead to a loopback, private, "
        "link-local, multicast or reserved address"
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://93.184.216.34/", "url must be an http or https URL"),
        ("93.184.216.34/hook", "url must be an http or https URL"),
        ("https://user:pw@93.184.216.34/", "url must not carry a user name or password"),
        ("https://" + "a" * 2050, "url must be an http or https URL of at most 2048 characters"),
        (None, "url must be an http or https URL of at most 2048 characters"),
        ("https://no-such-host.invalid/hook", "url's host could not be resolved"),
    ],
)
def test_bad_urls_are_400(
    client: FlaskClient, login: Callable[..., str], url: Any, message: str
) -> None:
    response = register(client, login(), url)
    assert response.status_code == 400 and response.get_json() == {"error": message}


@pytest.mark.parametrize(
    "events", [None, [], ["member.join", "member.explode"], "member.join", [1]]
)
def test_events_must_be_a_list_of_known_types(
    client: FlaskClient, login: Callable[..., str], events: Any
) -> None:
    response = client.post(
        "/api/webhooks", headers=auth(login()), json={"url": PUBLIC_URL, "events": events}
    )
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(
        "events must be a non-empty list of: member.join, member.update"
    )


def test_a_session_has_at_most_its_share(
    make_app: Callable[..., Flask], login: Callable[..., str]
) -> None:
    client = make_app(MAX_WEBHOOKS_PER_SESSION=2).test_client()
    session = login(test_client=client)
    assert [register(client, session).status_code for _ in range(2)] == [201, 201]
    refused = register(client, session)
    assert refused.status_code == 429
    assert refused.get_json()["error"] == (
        "Too many webhooks for this session (at most 2): delete one first"
    )
    assert register(client, login(test_client=client)).status_code == 201  # another session


def test_deleting_is_for_the_owner_only(client: FlaskClient, login: Callable[..., str]) -> None:
    mine, theirs = login(), login()
    created = register(client, mine).get_json()
    assert client.delete(f"/api/webhooks/{created['id']}", headers=auth(theirs)).status_code == 404
    deleted = client.delete(f"/api/webhooks/{created['id']}", headers=auth(mine))
    assert deleted.status_code == 204 and deleted.data == b""
    again = client.delete(f"/api/webhooks/{created['id']}", headers=auth(mine))
    assert again.status_code == 404 and again.get_json() == {"error": "Webhook not found"}
    assert client.get("/api/webhooks", headers=auth(mine)).get_json() == []


def test_webhooks_need_a_session(client: FlaskClient) -> None:
    assert (
        client.post(
            "/api/webhooks", json={"url": PUBLIC_URL, "events": ["member.join"]}
        ).status_code
        == 401
    )
    assert client.get("/api/webhooks").status_code == 401
    assert client.delete("/api/webhooks/x").status_code == 401


def test_published_events_are_delivered_signed_and_in_order(
    open_app: Flask, login: Callable[..., str], receiver: Receiver
) -> None:
    client = open_app.test_client()
    session = login(test_client=client)
    created = register(client, session, receiver.url, ["member.join", "member.leave"]).get_json()
    bus = runtime_of(open_app).bus
    joined = bus.publish(TOPIC, "member.join", {"id": "7"})
    bus.publish(TOPIC, "message.create", {"id": "8"})  # not subscribed
    bus.publish(topic_of(fingerprint("good-token"), 101), "member.join", {"id": "9"})
    left = bus.publish(TOPIC, "member.leave", {"id": "7"})
    first, second = receiver.wait_for(2)
    assert [first.json(), second.json()] == [joined.to_json(), left.to_json()]
    assert first.signed_with(created["secret"]) and second.signed_with(created["secret"])
    assert first.headers["X-MemberSense-Event"] == "member.join"
    [listed] = client.get("/api/webhooks", headers=auth(session)).get_json()
    assert listed["lastDeliveryAt"] is not None and listed["lastError"] is None
    assert len(receiver.deliveries) == 2


def test_a_failing_receiver_is_disabled_and_shows_why(
    make_app: Callable[..., Flask], login: Callable[..., str], receiver: Receiver
) -> None:
    app = make_app(WEBHOOK_ALLOW_PRIVATE="1", WEBHOOK_MAX_ATTEMPTS=1, WEBHOOK_DISABLE_AFTER=2)
    client = app.test_client()
    session = login(test_client=client)
    register(client, session, receiver.url, ["member.join"])
    receiver.answers = [500, 500]
    for n in range(3):
        runtime_of(app).bus.publish(TOPIC, "member.join", {"id": str(n)})
    receiver.wait_for(2)

    def disabled() -> Any:
        [listed] = client.get("/api/webhooks", headers=auth(session)).get_json()
        return listed if not listed["active"] else None

    listed = wait_until(disabled, what="the webhook to be disabled")
    assert listed["failures"] == 2 and listed["lastError"] == "answered 500 (after 1 tries)"


def test_subscriptions_end_with_their_session(
    open_app: Flask, login: Callable[..., str], receiver: Receiver, clock: FakeClock
) -> None:
    client = open_app.test_client()
    webhooks = runtime_of(open_app).webhooks
    out, idle = login(test_client=client), login(test_client=client)
    for session in (out, idle):
        register(client, session, receiver.url, ["member.join"])
    assert len(webhooks.store.of_topic(TOPIC)) == 2
    client.post("/api/auth/logout", headers=auth(out))
    assert [s.session_id for s in webhooks.store.of_topic(TOPIC)] == [idle]
    clock.advance(runtime_of(open_app).settings.session_timeout_s + 1)
    assert runtime_of(open_app).sessions.sweep() == 1
    assert webhooks.store.of_topic(TOPIC) == []
    runtime_of(open_app).bus.publish(TOPIC, "member.join", {"id": "7"})
    assert receiver.deliveries == []


def test_a_delivery_counts_as_session_activity(
    make_app: Callable[..., Flask], login: Callable[..., str], receiver: Receiver, clock: FakeClock
) -> None:
    app = make_app(WEBHOOK_ALLOW_PRIVATE="1", SESSION_TIMEOUT=60000)
    client = app.test_client()
    session = login(test_client=client)
    register(client, session, receiver.url, ["member.join"])
    runtime = runtime_of(app)
    deliverer = runtime.webhooks.deliverer
    touched = threading.Event()
    touch = deliverer._touch  # the session store's get, which restarts the idle timer

    def spy(session_id: str) -> object:
        try:
            return touch(session_id)
        finally:
            touched.set()

    deliverer._touch = spy
    clock.advance(50)
    runtime.bus.publish(TOPIC, "member.join", {"id": "7"})
    receiver.wait_for(1)
    assert touched.wait(10)
    clock.advance(50)  # 100 s after the login, 50 after the delivery: still active
    assert runtime.sessions.sweep() == 0
    clock.advance(11)
    assert runtime.sessions.sweep() == 1


def test_guild_id_subscribes_to_another_guild_of_the_bot(
    make_app: Callable[..., Flask], discord: FakeDiscord
) -> None:
    discord.tokens["multi"] = [make_guild(1, "One"), make_guild(2, "Two")]
    client = make_app().test_client()
    session = client.post("/api/auth/login", json={"token": "multi"}).get_json()["sessionId"]
    created = register(client, session, path="/api/webhooks?guildId=2")
    assert created.status_code == 201 and created.get_json()["guildId"] == "2"
    assert register(client, session, path="/api/webhooks?guildId=3").status_code == 404
