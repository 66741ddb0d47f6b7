"""Live events, sending and webhooks in Redis mode, across instances (issues 9 and 10).

One cluster for the module: two gunicorn instances (A and B) of two workers each, one
sandbox, one Redis. The main bot logs in on A, so a worker of A owns its gateway
connection and publishes its events; B's processes read them from Redis. Streams,
long-polls, tickets, sending and webhooks are used across the two; then, with a webhook
registered, the owning worker is killed (``kill -9``), and the next owner stopped
(SIGTERM): every event the bot's stream holds is delivered at least once, those after the
takeover exactly once. What Discord sends while no process holds the bot's gateway
connection never becomes an event (nobody resumes the dead owner's gateway session):
streams get a reset, and the state read afterwards has it.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from membersense.bus import topic_of
from membersense.discord.tokens import fingerprint
from membersense.events.live import HEARTBEAT_S
from membersense.sandbox.server import SandboxServer
from tests.integration.conftest import LEASE_S, LOGIN_TIMEOUT_S, Cluster, MemberSense, api_of
from tests.integration.support import (
    MAIN_TOKEN,
    Api,
    Control,
    call,
    general,
    newcomer,
    sandbox_messages,
    stream,
    wait_until,
)
from tests.receiver import Delivery, Receiver, running_receiver
from tests.sse import Frame, FrameReader

#: Settings of both instances: webhooks may be delivered to this machine's receiver.
ENV = {"WEBHOOK_ALLOW_PRIVATE": "1"}
#: How long a takeover may take: the lease running out, the keeper's next round, a login.
TAKEOVER_S = LEASE_S + LOGIN_TIMEOUT_S
#: The webhook of the failover tests.
WANTED = ["member.join", "message.create"]


@pytest.fixture(scope="module")
def cluster(sandbox: SandboxServer, module_tmp: Path, redis_url: str) -> Iterator[Cluster]:
    made = Cluster(sandbox, module_tmp, redis_url)
    yield made
    made.stop()


@pytest.fixture(scope="module")
def a(cluster: Cluster) -> MemberSense:
    return cluster.start(**ENV)


@pytest.fixture(scope="module")
def b(cluster: Cluster, a: MemberSense) -> MemberSense:
    return cluster.start(**ENV)


@pytest.fixture(scope="module")
def session(cluster: Cluster, a: MemberSense, b: MemberSense) -> Iterator[str]:
    """The main bot logged in on A for the module: the worker of A that served the login
    took the bot's lease and connected it."""
    session = api_of(a).login(MAIN_TOKEN)
    yield session
    api_of(a).logout(session)


@pytest.fixture
def control(a: MemberSense) -> Control:
    return a.control


@pytest.fixture
def receiver(a: MemberSense, session: str) -> Iterator[Receiver]:
    """A webhook receiver; the session's webhooks are deleted after the test."""
    with running_receiver() as server:
        yield server
        for hook in api_of(a).get("/api/webhooks", session).json():
            call(api_of(a), "DELETE", f"/api/webhooks/{hook['id']}", session)


# -- helpers ---------------------------------------------------------------------------------


def number(event_id: str | None) -> int:
    """The event number of a bus id (``"<epoch>.<n>"``)."""
    assert event_id is not None
    return int(event_id.partition(".")[2])


def epoch(event_id: str | None) -> str:
    assert event_id is not None
    return event_id.partition(".")[0]


def frames_until(frames: FrameReader, match: Callable[[Frame], bool]) -> list[Frame]:
    """Every event frame up to and including the first one *match* accepts."""
    read = []
    while True:
        frame = frames.next_event()
        read.append(frame)
        if match(frame):
            return read


def consecutive(frames: list[Frame]) -> bool:
    """Whether the frames' ids are one epoch's numbers without a gap or a repeat."""
    numbers = [number(f.id) for f in frames]
    return len({epoch(f.id) for f in frames}) == 1 and numbers == list(
        range(numbers[0], numbers[0] + len(numbers))
    )


def owned_by(cluster: Cluster, instance: MemberSense) -> bool:
    return cluster.instance_of(cluster.owner_pid(MAIN_TOKEN)) is instance


def post(control: Control, channel: str, content: str, **fields: Any) -> dict[str, Any]:
    """A message posted in Discord (the sandbox), by someone other than the bot."""
    return control.request("POST", f"/channels/{channel}/messages", content=content, **fields)


def register(api: Api, session: str, url: str, events: list[str]) -> dict[str, Any]:
    made = call(api, "POST", "/api/webhooks", session, json={"url": url, "events": events})
    assert made.status_code == 201, made.text
    return made.json()


def deliveries_to(receiver: Receiver, url: str) -> list[Delivery]:
    path = url.removeprefix(receiver.url.removesuffix("/hook"))
    with receiver.changed:
        return [d for d in receiver.deliveries if d.path == path]


def redis_events(cluster: Cluster, topic: str) -> list[dict[str, Any]]:
    """The events the bot's stream in Redis holds, oldest first (what was published)."""
    client = redis.Redis.from_url(cluster.url)
    try:
        entries = client.xrange(cluster.keys.stream(topic))
    finally:
        client.close()
    return [
        {
            "id": fields[b"i"].decode(),
            "type": fields[b"t"].decode(),
            "timestamp": int(fields[b"ts"]),
            "data": json.loads(fields[b"d"]),
        }
        for _, fields in entries
    ]


def stream_epoch(cluster: Cluster, topic: str) -> bytes | None:
    client = redis.Redis.from_url(cluster.url)
    try:
        return client.get(cluster.keys.stream_epoch(topic))
    finally:
        client.close()


# -- streams, tickets, long-polls, sending ----------------------------------------------------


def test_a_stream_on_b_gets_the_events_of_as_connection_in_order_and_resumes_on_a(
    cluster: Cluster, a: MemberSense, b: MemberSense, session: str, control: Control
) -> None:
    assert owned_by(cluster, a)  # no process of B holds the bot's gateway connection
    api_a, api_b = api_of(a), api_of(b)
    channel = general(api_b, session)
    alpha = control.guild_id("Alpha")
    with stream(api_b, session) as frames:
        added = control.request("POST", f"/guilds/{alpha}/members", username=newcomer())
        member = added["user"]["id"]
        posted = post(control, channel, "seen on B", author_id=member)
        control.request(
            "PATCH", f"/channels/{channel}/messages/{posted['id']}", content="edited, seen on B"
        )
        seen = frames_until(frames, lambda f: f.event == "message.update")
    assert consecutive(seen)
    wanted = [f for f in seen if f.event in ("member.join", "message.create", "message.update")]
    assert [f.event for f in wanted] == ["member.join", "message.create", "message.update"]
    assert wanted[0].json()["id"] == member
    assert wanted[1].json()["id"] == posted["id"]
    assert wanted[1].json()["content"] == "seen on B"
    assert wanted[2].json()["content"] == "edited, seen on B"

    # Away meanwhile; then back, on the other instance, from the last id seen.
    control.request("DELETE", f"/channels/{channel}/messages/{posted['id']}")
    later = post(control, channel, "said while away", author_id=member)
    last = seen[-1].id or ""
    with stream(api_a, session, **{"Last-Event-ID": last}) as frames:
        resumed = frames_until(
            frames, lambda f: f.event == "message.create" and f.json()["id"] == later["id"]
        )
    assert consecutive(seen + resumed)  # nothing lost, nothing twice, no reset
    assert [f.event for f in resumed if (f.event or "").startswith("message.")] == [
        "message.delete",
        "message.create",
    ]
    assert resumed[0].json() == {"id": posted["id"], "channelId": channel}


def test_a_ticket_from_a_opens_one_stream_on_b(
    a: MemberSense, b: MemberSense, session: str, control: Control
) -> None:
    api_a, api_b = api_of(a), api_of(b)
    issued = call(api_a, "POST", "/api/events/ticket", session)
    assert issued.status_code == 201
    ticket = issued.json()["ticket"]
    channel = general(api_b, session)
    with api_b.http.get(
        f"{api_b.base_url}/api/events?ticket={ticket}", stream=True, timeout=(10, 30)
    ) as response:
        assert response.status_code == 200
        frames = FrameReader(response.iter_content(chunk_size=None))
        assert next(frames).comments == ["connected"]
        posted = post(control, channel, "for the ticket holder")
        frames_until(
            frames, lambda f: f.event == "message.create" and f.json()["id"] == posted["id"]
        )
    # Used: on no instance does it open anything again.
    for api in (api_a, api_b):
        again = api.http.get(f"{api.base_url}/api/events?ticket={ticket}", timeout=10)
        assert again.status_code == 401
        assert again.json() == {"error": "Invalid or expired ticket"}


def test_a_long_poll_on_b_returns_an_event_of_as_connection(
    cluster: Cluster, a: MemberSense, b: MemberSense, session: str, control: Control
) -> None:
    assert owned_by(cluster, a)
    api_b = api_of(b)
    channel = general(api_b, session)
    cursor = api_b.get("/api/events/poll", session).headers["X-Event-Cursor"]
    # Posted while the poll waits.
    poster = threading.Timer(0.5, post, (control, channel, "worth the wait on B"))
    poster.start()
    try:
        answer = api_b.get("/api/events/poll", session, after=cursor, wait=20)
    finally:
        poster.join()
    assert answer.status_code == 200
    events = answer.json()
    assert isinstance(events, list) and events, events
    assert number(events[0]["id"]) == number(cursor) + 1  # nothing skipped
    assert events[-1]["type"] == "message.create"
    assert events[-1]["data"]["content"] == "worth the wait on B"
    assert answer.headers["X-Event-Cursor"] == events[-1]["id"]


def test_a_message_sent_through_b_reaches_discord_once_and_the_stream(
    a: MemberSense, b: MemberSense, session: str, control: Control, sandbox: SandboxServer
) -> None:
    api_a, api_b = api_of(a), api_of(b)
    channel = general(api_b, session)
    content = f"sent through B {time.time_ns()}"
    key = {"Idempotency-Key": f"through-b-{time.time_ns()}"}
    with stream(api_a, session) as frames:
        sent = call(
            api_b,
            "POST",
            "/api/messages",
            session,
            json={"channelId": channel, "content": content},
            headers=key,
        )
        assert sent.status_code == 201, sent.text
        message = sent.json()
        # The client retries on the other instance (a timeout, say): the same message.
        retried = call(
            api_a,
            "POST",
            "/api/messages",
            session,
            json={"channelId": channel, "content": content},
            headers=key,
        )
        assert retried.status_code == 201 and retried.json()["id"] == message["id"]
        marker = post(control, channel, "after the sent one")
        read = frames_until(
            frames, lambda f: f.event == "message.create" and f.json()["id"] == marker["id"]
        )
    created = [f for f in read if f.event == "message.create" and f.json()["id"] == message["id"]]
    assert [f.json() for f in created] == [message]
    copies = [m for m in sandbox_messages(sandbox, channel) if m["content"] == content]
    assert [(m["id"], m["author"]) for m in copies] == [(message["id"], "Main Bot")]


# -- webhooks ---------------------------------------------------------------------------------


def test_a_webhook_registered_on_b_is_delivered_once_by_a_listed_and_deleted_there(
    cluster: Cluster,
    a: MemberSense,
    b: MemberSense,
    session: str,
    control: Control,
    receiver: Receiver,
) -> None:
    assert owned_by(cluster, a)
    api_a, api_b = api_of(a), api_of(b)
    channel = general(api_b, session)
    alpha = control.guild_id("Alpha")
    main_url, other_url = f"{receiver.url}?hook=main", f"{receiver.url}?hook=other"
    with stream(api_b, session) as frames:
        other = register(api_b, session, other_url, ["member.join"])
        hook = register(api_b, session, main_url, ["member.join", "message.create"])
        # Right away: events that come before the owner hears of the webhook count too.
        added = control.request("POST", f"/guilds/{alpha}/members", username=newcomer())
        posts = [
            post(control, channel, f"hook {n}", author_id=added["user"]["id"]) for n in range(3)
        ]
        read = frames_until(
            frames, lambda f: f.event == "message.create" and f.json()["id"] == posts[-1]["id"]
        )
    events = [f for f in read if f.event in ("member.join", "message.create")]
    assert len(events) == 4
    wait_until(
        lambda: len(deliveries_to(receiver, main_url)) >= len(events),
        timeout=15,
        what="a delivery of every event",
    )
    # One more (the last of the outbox): once it is in, any duplicate would be too.
    marker = post(control, channel, "marker")
    wait_until(
        lambda: any(
            d.json()["data"]["id"] == marker["id"] for d in deliveries_to(receiver, main_url)
        ),
        what="the marker's delivery",
    )
    delivered = [
        d for d in deliveries_to(receiver, main_url) if d.json()["data"]["id"] != marker["id"]
    ]
    assert [d.json()["id"] for d in delivered] == [f.id for f in events]  # each once, in order
    assert [d.json()["data"] for d in delivered] == [f.json() for f in events]
    assert all(d.signed_with(hook["secret"]) for d in delivered)
    assert all(d.headers["X-MemberSense-Delivery"] == d.json()["id"] for d in delivered)

    # Listed on A, with how deliveries go; deleted on A.
    def listed() -> dict[str, Any] | None:
        found = {h["id"]: h for h in api_a.get("/api/webhooks", session).json()}
        mine = found.get(hook["id"])
        return mine if mine is not None and mine["lastDeliveryAt"] else None

    shown = wait_until(listed, what="the deliveries to show on A")
    assert shown["url"] == main_url and "secret" not in shown
    assert shown["failures"] == 0 and shown["active"] is True
    assert call(api_a, "DELETE", f"/api/webhooks/{hook['id']}", session).status_code == 204
    assert [h["id"] for h in api_b.get("/api/webhooks", session).json()] == [other["id"]]
    before = len(deliveries_to(receiver, main_url))
    joined = control.request("POST", f"/guilds/{alpha}/members", username=newcomer())
    post(control, channel, "after the delete")
    # The other webhook gets the join: the deleted one would have had it by then.
    wait_until(
        lambda: any(
            d.json()["data"]["id"] == joined["user"]["id"]
            for d in deliveries_to(receiver, other_url)
        ),
        what="the other webhook's delivery",
    )
    time.sleep(0.5)  # and the message right after it
    assert len(deliveries_to(receiver, main_url)) == before


def test_logout_on_a_ends_a_stream_on_b_and_the_sessions_webhooks(
    cluster: Cluster,
    a: MemberSense,
    b: MemberSense,
    session: str,
    control: Control,
    receiver: Receiver,
) -> None:
    api_a, api_b = api_of(a), api_of(b)
    leaving = api_a.login(MAIN_TOKEN)
    leaving_url, staying_url = f"{receiver.url}?session=leaving", f"{receiver.url}?session=staying"
    register(api_b, leaving, leaving_url, ["member.join"])
    register(api_b, session, staying_url, ["member.join"])
    # Read times out well before the stream's first heartbeat (when it would look at its
    # session itself): the end must come from the logout's notice.
    with stream(api_b, leaving, read_timeout=HEARTBEAT_S * 2 / 3) as frames:
        assert api_a.logout(leaving).status_code == 200
        rest = frames.rest()
    assert rest and rest[-1].event == "end"
    assert api_b.get("/api/webhooks", leaving).status_code == 401
    client = redis.Redis.from_url(cluster.url)
    try:
        assert not client.exists(cluster.keys.session_webhooks(leaving))
    finally:
        client.close()
    joined = control.request(
        "POST", f"/guilds/{control.guild_id('Alpha')}/members", username=newcomer()
    )
    wait_until(
        lambda: any(
            d.json()["data"]["id"] == joined["user"]["id"]
            for d in deliveries_to(receiver, staying_url)
        ),
        what="the staying session's delivery",
    )
    time.sleep(0.5)
    assert deliveries_to(receiver, leaving_url) == []


# -- failover ---------------------------------------------------------------------------------


def _webhooks_survive(
    cluster: Cluster, session: str, receiver: Receiver, stop: Callable[[int], None]
) -> None:
    """Register a webhook, *stop(pid)* the bot's owner amid a burst of events, produce
    events while nobody owns the bot and once another process does, then check what
    the receiver got against what the bot's stream holds."""
    owner = cluster.owner_pid(MAIN_TOKEN)
    assert owner is not None
    owning = cluster.instance_of(owner)
    other = next(i for i in cluster.instances[:2] if i is not owning)
    api, control = api_of(other), other.control
    channel = general(api, session)
    alpha = control.guild_id("Alpha")
    topic = topic_of(fingerprint(MAIN_TOKEN), alpha)
    url = f"{receiver.url}?failover={owner}"
    hook = register(api, session, url, WANTED)

    def delivered_ids() -> collections.Counter[str]:
        return collections.Counter(d.json()["id"] for d in deliveries_to(receiver, url))

    def delivered_data_ids() -> set[str]:
        return {d.json()["data"]["id"] for d in deliveries_to(receiver, url)}

    first = post(control, channel, "before the failover")
    wait_until(lambda: first["id"] in delivered_data_ids(), what="normal delivery")
    old_epoch = stream_epoch(cluster, topic)
    with stream(api, session, read_timeout=TAKEOVER_S + 10) as frames:
        burst = [post(control, channel, f"burst {n}") for n in range(5)]
        stop(owner)
        # Meanwhile the owner's gateway connection is gone (kill -9: its lease runs out
        # before another process takes over) or going (SIGTERM: requests in flight get their
        # grace, then it closes and releases the lease at once).
        gap_member = control.request("POST", f"/guilds/{alpha}/members", username=newcomer())
        post(control, channel, "in the gap")
        wait_until(
            lambda: (
                cluster.owner_pid(MAIN_TOKEN) not in (None, owner)
                and stream_epoch(cluster, topic) not in (None, old_epoch)
            ),
            timeout=TAKEOVER_S,
            what="another process to take the bot over",
        )
        after = [post(control, channel, f"after the takeover {n}") for n in range(3)]
        after_member = control.request("POST", f"/guilds/{alpha}/members", username=newcomer())
        # Readers of the stream are told that events may be missing: a reset, then on.
        read = frames_until(
            frames, lambda f: f.event == "message.create" and f.json()["id"] == after[-1]["id"]
        )
    assert "reset" in [f.event for f in read]
    assert control.connections_of("Main Bot") == 1

    def published() -> list[dict[str, Any]]:
        return [
            e
            for e in redis_events(cluster, topic)
            if e["type"] in WANTED and e["timestamp"] >= hook["createdAt"]
        ]

    def all_delivered() -> bool:
        return set(delivered_ids()) >= {e["id"] for e in published()} and delivered_data_ids() >= {
            m["id"] for m in after
        } | {after_member["user"]["id"]}

    wait_until(all_delivered, timeout=30, what="every published event to be delivered")
    time.sleep(0.5)  # any duplicate still on its way
    counts = delivered_ids()
    events = published()
    new_epoch = (stream_epoch(cluster, topic) or b"").decode()
    assert {e["id"] for e in events} <= set(counts)  # none lost
    assert all(d.signed_with(hook["secret"]) for d in deliveries_to(receiver, url))
    # Twice at most, and only events of before the takeover.
    assert max(counts.values()) <= 2, counts
    assert all(counts[e["id"]] == 1 for e in events if epoch(e["id"]) == new_epoch), counts
    # What the burst got published was delivered; the gap's member shows in the state.
    published_messages = {e["data"]["id"] for e in events if e["type"] == "message.create"}
    assert {m["id"] for m in burst if m["id"] in published_messages} <= delivered_data_ids()
    wait_until(
        lambda: any(
            m["id"] == gap_member["user"]["id"] for m in api.get("/api/members", session).json()
        ),
        what="the member who joined in the gap",
    )


def test_webhook_deliveries_survive_a_killed_owner(
    cluster: Cluster, a: MemberSense, b: MemberSense, session: str, receiver: Receiver
) -> None:
    _webhooks_survive(cluster, session, receiver, lambda pid: os.kill(pid, signal.SIGKILL))


def test_webhook_deliveries_survive_an_owner_stopped_with_sigterm(
    cluster: Cluster, a: MemberSense, b: MemberSense, session: str, receiver: Receiver
) -> None:
    _webhooks_survive(cluster, session, receiver, lambda pid: os.kill(pid, signal.SIGTERM))
