"""Event streams, long-polls and tickets: request handling against the fake Discord, with
events published straight onto the app's bus."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from membersense import runtime_of
from membersense.bus import topic_of
from membersense.discord.tokens import fingerprint
from tests.contract import contract_of
from tests.fakes import DEFAULT_AVATAR, FakeClock, FakeDiscord, make_guild
from tests.sse import FrameReader

TOPIC = topic_of(fingerprint("good-token"), 100)
MEMBER = {
    "id": "7",
    "username": "newbie",
    "displayName": "newbie",
    "avatar": DEFAULT_AVATAR,
    "roles": ["@everyone"],
    "role": "@everyone",
    "joinedAt": None,
    "bot": False,
    "roleColor": None,
}


def auth(session_id: str, **headers: str) -> dict[str, str]:
    return {"Authorization": session_id, **headers}


@pytest.fixture
def fast_app(make_app: Callable[..., Flask]) -> Flask:
    """An app whose streams wake often (tests do not wait a second to see an end)."""
    app = make_app()
    runtime_of(app).live.wake_s = 0.02
    return app


@pytest.fixture
def fast_client(fast_app: Flask) -> FlaskClient:
    return fast_app.test_client()


@contextmanager
def open_stream(
    client: FlaskClient, path: str = "/api/events", **headers: str
) -> Iterator[FrameReader]:
    response = client.get(path, headers=headers, buffered=False)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    try:
        yield FrameReader(
            iter(response.response), check=contract_of(client.application).check_frame
        )
    finally:
        response.close()


def publish(
    app: Flask, type: str = "member.join", data: dict[str, Any] | None = None, topic: str = TOPIC
) -> str:
    return runtime_of(app).bus.publish(topic, type, data or MEMBER).id


def later(seconds: float, fn: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), fn()))
    thread.start()
    return thread


def test_events_of_the_session_guild_arrive_as_frames(
    fast_app: Flask, fast_client: FlaskClient, login: Callable[..., str]
) -> None:
    session = login(test_client=fast_client)
    with open_stream(fast_client, **auth(session)) as frames:
        assert next(frames).comments == ["connected"]  # headers reach the client at once
        publish(fast_app, topic=topic_of(fingerprint("other"), 100))  # another bot's view
        publish(fast_app, topic=topic_of(fingerprint("good-token"), 101))  # another guild
        event_id = publish(fast_app, "member.join")
        publish(fast_app, "message.delete", {"id": "9", "channelId": "500"})
        frame = frames.next_event()
        assert (frame.id, frame.event, frame.json()) == (event_id, "member.join", MEMBER)
        assert frames.next_event().json() == {"id": "9", "channelId": "500"}


def test_last_event_id_resumes_after_that_event(
    fast_app: Flask, fast_client: FlaskClient, login: Callable[..., str]
) -> None:
    session = login(test_client=fast_client)
    first, second, third = (
        publish(fast_app, "member.update", {**MEMBER, "displayName": f"newbie {n}"})
        for n in range(3)
    )
    with open_stream(fast_client, **auth(session, **{"Last-Event-ID": first})) as frames:
        assert [frames.next_event().id for _ in range(2)] == [second, third]
    # The same from a query parameter (a client reopening an EventSource with a new ticket).
    with open_stream(fast_client, f"/api/events?lastEventId={second}", **auth(session)) as frames:
        assert frames.next_event().id == third


def test_a_resume_point_out_of_the_buffer_starts_with_a_reset(
    make_app: Callable[..., Flask], login: Callable[..., str]
) -> None:
    app = make_app(EVENT_BUFFER_SIZE=2)
    runtime_of(app).live.wake_s = 0.02
    client = app.test_client()
    session = login(test_client=client)
    ids = [
        publish(app, "member.update", {**MEMBER, "displayName": f"newbie {n}"}) for n in range(5)
    ]
    with open_stream(client, **auth(session, **{"Last-Event-ID": ids[0]})) as frames:
        reset = frames.next_event()
        assert reset.event == "reset" and reset.id == ids[-1] and reset.json() == {}
        newer = publish(app)
        assert frames.next_event().id == newer  # and on from there
    with open_stream(
        client, **auth(session, **{"Last-Event-ID": "from-another-epoch-3"})
    ) as frames:
        assert frames.next_event().event == "reset"


def test_logout_ends_the_stream_and_frees_its_place(
    fast_app: Flask, fast_client: FlaskClient, login: Callable[..., str]
) -> None:
    session = login(test_client=fast_client)
    live = runtime_of(fast_app).live
    with open_stream(fast_client, **auth(session)) as frames:
        next(frames)
        assert live.open_readers == 1
        later(0.1, lambda: fast_client.post("/api/auth/logout", headers=auth(session)))
        rest = frames.rest()
        assert rest[-1].event == "end" and rest[-1].json() == {"reason": "session ended"}
    assert live.open_readers == 0


def test_a_stopping_server_ends_its_streams_saying_so(
    fast_app: Flask, fast_client: FlaskClient, login: Callable[..., str]
) -> None:
    # The session is not over (in Redis mode another instance serves it): clients may go on.
    session = login(test_client=fast_client)
    live = runtime_of(fast_app).live
    with open_stream(fast_client, **auth(session)) as frames:
        next(frames)
        later(0.1, live.close)
        rest = frames.rest()
        assert rest[-1].event == "end" and rest[-1].json() == {"reason": "server shutting down"}
    assert live.open_readers == 0


def test_heartbeats_keep_the_session_alive_and_notice_its_expiry(
    fast_app: Flask, fast_client: FlaskClient, login: Callable[..., str], clock: FakeClock
) -> None:
    session = login(test_client=fast_client)
    live = runtime_of(fast_app).live
    live.heartbeat_s = 0.05
    timeout = runtime_of(fast_app).settings.session_timeout_s
    with open_stream(fast_client, **auth(session)) as frames:
        next(frames)
        for _ in range(3):  # idle far longer than the session timeout, in steps
            clock.advance(timeout * 0.6)
            assert next(frames).comments == ["heartbeat"]
        assert fast_client.get("/api/members", headers=auth(session)).status_code == 200
        clock.advance(timeout + 1)  # now expired: the next heartbeat finds out
        assert frames.rest()[-1].event == "end"
    assert fast_client.get("/api/members", headers=auth(session)).status_code == 401


def test_a_stream_ends_after_its_time_limit_with_a_retry_hint(
    fast_app: Flask, fast_client: FlaskClient, login: Callable[..., str]
) -> None:
    runtime_of(fast_app).live.max_stream_s = 0.1
    with open_stream(fast_client, **auth(login(test_client=fast_client))) as frames:
        assert frames.rest()[-1].fields == {"retry": "1000"}


def test_the_cap_is_shared_by_streams_and_long_polls(
    make_app: Callable[..., Flask], login: Callable[..., str]
) -> None:
    app = make_app(MAX_EVENT_STREAMS=100, THREADS=4)  # at most half the threads: 2
    client = app.test_client()
    session = login(test_client=client)
    assert runtime_of(app).live.cap == 2
    with open_stream(client, **auth(session)), open_stream(client, **auth(session)):
        refused = client.get("/api/events", headers=auth(session))
        assert refused.status_code == 503
        assert refused.get_json()["error"] == "Too many event streams are open; try again shortly"
        assert refused.headers["Retry-After"] == "5"
        assert client.get("/api/events/poll?wait=5", headers=auth(session)).status_code == 503
        # What holds no thread still works: reads, health, a poll that does not wait.
        assert client.get("/api/members", headers=auth(session)).status_code == 200
        assert client.get("/_ah/health").status_code == 200
        assert client.get("/api/events/poll", headers=auth(session)).status_code == 200
    with open_stream(client, **auth(session)):
        pass


def test_streams_need_a_session_or_a_ticket_once(
    fast_app: Flask, fast_client: FlaskClient, login: Callable[..., str], clock: FakeClock
) -> None:
    session = login(test_client=fast_client)
    assert fast_client.get("/api/events").status_code == 401
    assert fast_client.post("/api/events/ticket").status_code == 401
    issued = fast_client.post("/api/events/ticket", headers=auth(session))
    assert issued.status_code == 201 and issued.get_json()["expiresIn"] == 60
    assert issued.headers["Cache-Control"] == "no-store"  # a credential
    ticket = issued.get_json()["ticket"]
    with open_stream(fast_client, f"/api/events?ticket={ticket}") as frames:
        event_id = publish(fast_app)
        assert frames.next_event().id == event_id
    reused = fast_client.get(f"/api/events?ticket={ticket}")
    assert reused.status_code == 401
    assert reused.get_json() == {"error": "Invalid or expired ticket"}
    expired = fast_client.post("/api/events/ticket", headers=auth(session)).get_json()["ticket"]
    clock.advance(61)
    assert fast_client.get(f"/api/events?ticket={expired}").status_code == 401
    # Tickets open streams only, and die with their session.
    ticket = fast_client.post("/api/events/ticket", headers=auth(session)).get_json()["ticket"]
    assert fast_client.get(f"/api/events/poll?ticket={ticket}").status_code == 401
    fast_client.post("/api/auth/logout", headers=auth(session))
    assert fast_client.get(f"/api/events?ticket={ticket}").status_code == 401
    assert fast_client.get("/api/events?ticket=not-a-ticket").status_code == 401


def test_a_long_poll_answers_at_once_or_waits_for_the_first_event(
    fast_app: Flask, fast_client: FlaskClient, login: Callable[..., str]
) -> None:
    session = login(test_client=fast_client)
    empty = fast_client.get("/api/events/poll", headers=auth(session))
    assert empty.status_code == 200 and empty.get_json() == []
    cursor = empty.headers["X-Event-Cursor"]
    first = publish(fast_app, "member.join")
    found = fast_client.get(f"/api/events/poll?after={cursor}", headers=auth(session))
    [event] = found.get_json()
    assert event["id"] == first and event["type"] == "member.join" and event["data"] == MEMBER
    assert event["guildId"] == "100" and isinstance(event["timestamp"], int)
    assert found.headers["X-Event-Cursor"] == first
    thread = later(0.2, lambda: publish(fast_app, "member.leave", {"id": "7"}))
    waited = fast_client.get(f"/api/events/poll?after={first}&wait=10", headers=auth(session))
    thread.join()
    assert [e["type"] for e in waited.get_json()] == ["member.leave"]
    quiet = fast_client.get(
        f"/api/events/poll?after={waited.headers['X-Event-Cursor']}&wait=1", headers=auth(session)
    )
    assert quiet.get_json() == []


def test_a_long_poll_reports_a_reset(
    make_app: Callable[..., Flask], login: Callable[..., str]
) -> None:
    app = make_app(EVENT_BUFFER_SIZE=1)
    client = app.test_client()
    session = login(test_client=client)
    first, _, last = (publish(app) for _ in range(3))
    body = client.get(f"/api/events/poll?after={first}", headers=auth(session)).get_json()
    assert body == {"reset": True, "cursor": last}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("wait=26", "wait must be an integer between 0 and 25"),
        ("limit=0", "limit must be an integer between 1 and 100"),
        ("after=a%20b", "after must be an event id this API sent"),
    ],
)
def test_bad_long_polls_are_400(
    client: FlaskClient, login: Callable[..., str], query: str, message: str
) -> None:
    response = client.get(f"/api/events/poll?{query}", headers=auth(login()))
    assert response.status_code == 400 and response.get_json() == {"error": message}


def test_guild_id_picks_another_guild_of_the_bot(
    make_app: Callable[..., Flask], discord: FakeDiscord
) -> None:
    discord.tokens["multi"] = [make_guild(1, "One"), make_guild(2, "Two")]
    app = make_app()
    client = app.test_client()
    session = client.post("/api/auth/login", json={"token": "multi"}).get_json()["sessionId"]
    publish(app, topic=topic_of(fingerprint("multi"), 2))
    # Without after, from now on: the event published before is not listed.
    assert client.get("/api/events/poll?guildId=2&after=", headers=auth(session)).get_json() == []
    cursor = client.get("/api/events/poll?guildId=2", headers=auth(session)).headers[
        "X-Event-Cursor"
    ]
    event_id = publish(app, topic=topic_of(fingerprint("multi"), 2))
    found = client.get(f"/api/events/poll?guildId=2&after={cursor}", headers=auth(session))
    assert [e["id"] for e in found.get_json()] == [event_id]
    assert client.get("/api/events/poll?guildId=3", headers=auth(session)).status_code == 404
    assert client.get("/api/events?guildId=3", headers=auth(session)).status_code == 404


def test_closing_the_runtime_ends_open_streams(
    fast_app: Flask, fast_client: FlaskClient, login: Callable[..., str]
) -> None:
    session = login(test_client=fast_client)
    with open_stream(fast_client, **auth(session)) as frames:
        next(frames)
        later(0.1, runtime_of(fast_app).close)
        assert frames.rest()[-1].event == "end"


def test_a_failing_bus_ends_the_stream_and_logs_no_traceback(
    fast_app: Flask,
    fast_client: FlaskClient,
    login: Callable[..., str],
    log_stream: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = login(test_client=fast_client)
    bus = runtime_of(fast_app).bus

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis://secret@host is down")

    with open_stream(fast_client, **auth(session)) as frames:
        next(frames)
        monkeypatch.setattr(bus, "read", broken)
        assert frames.rest() == []
    assert runtime_of(fast_app).live.open_readers == 0
    logged = log_stream.getvalue()
    assert "an event stream failed: ConnectionError" in logged
    assert "secret" not in logged and "Traceback" not in logged
