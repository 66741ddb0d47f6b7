"""The event bus: the memory ring buffer on its own, then fed by real discord.py from the
sandbox's member and message changes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from membersense.bus import EVENT_TYPES, Event, EventBus, MemoryEventBus, topic_of
from membersense.cluster.bus import RedisEventBus
from membersense.cluster.connection import RedisConnection
from membersense.cluster.writer import Writer
from membersense.discord.tokens import fingerprint
from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer
from tests.inprocess import Bots
from tests.integration.support import MAIN_TOKEN, Control, wait_until, write_scenario

TOPIC = topic_of("bot", 1)


class Buses:
    """Buses of one kind for a test; Redis ones write off the caller's thread, so tests
    let them settle before reading what was just published."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self._request = request
        self._closers: list = []

    def make(self, capacity: int = 10) -> EventBus:
        if self.kind == "memory":
            return MemoryEventBus(capacity)
        url = self._request.getfixturevalue("redis_url")
        prefix = self._request.getfixturevalue("redis_prefix")
        connection = RedisConnection(url, prefix)
        writer = Writer(connection)
        bus = RedisEventBus(connection, writer, capacity=capacity, retention_s=60)
        self._closers += [bus.close, writer.close, connection.close]
        bus.settle = lambda: writer.flush(5)  # type: ignore[attr-defined]
        return bus

    def close(self) -> None:
        for close in self._closers:
            close()


@pytest.fixture(params=["memory", "redis"])
def buses(request: pytest.FixtureRequest) -> Iterator[Buses]:
    made = Buses(request.param, request)
    yield made
    made.close()


def settle(bus: EventBus) -> None:
    getattr(bus, "settle", lambda: None)()


def publish(bus: EventBus, n: int, topic: str = TOPIC) -> list[Event]:
    events = [bus.publish(topic, "message.create", {"n": i}) for i in range(n)]
    settle(bus)
    return events


def test_events_come_back_in_order_after_an_id(buses: Buses) -> None:
    bus = buses.make(10)
    bus.restart(TOPIC)
    settle(bus)
    start = bus.cursor(TOPIC)
    events = publish(bus, 5)
    assert [e.guild_id for e in events] == ["1"] * 5
    assert len({e.id for e in events}) == 5
    batch = bus.read(TOPIC, start)
    assert [e.id for e in batch.events] == [e.id for e in events]
    assert [e.data for e in batch.events] == [e.data for e in events]
    assert not batch.reset and batch.cursor == events[-1].id
    after_two = bus.read(TOPIC, events[1].id)
    assert [e.data["n"] for e in after_two.events] == [2, 3, 4]
    limited = bus.read(TOPIC, start, limit=2)
    assert [e.data["n"] for e in limited.events] == [0, 1] and limited.cursor == events[1].id
    assert bus.read(TOPIC, events[-1].id).events == ()


def test_topics_are_separate(buses: Buses) -> None:
    bus = buses.make(10)
    bus.restart(TOPIC)
    bus.restart(topic_of("bot", 2))
    settle(bus)
    start_a, start_b = bus.cursor(TOPIC), bus.cursor(topic_of("bot", 2))
    publish(bus, 3)
    publish(bus, 1, topic_of("bot", 2))
    assert len(bus.read(TOPIC, start_a).events) == 3
    assert len(bus.read(topic_of("bot", 2), start_b).events) == 1


def test_an_id_that_fell_out_of_redis_stream_is_a_reset(redis_url: str, redis_prefix: str) -> None:
    connection = RedisConnection(redis_url, redis_prefix)
    writer = Writer(connection)
    bus = RedisEventBus(connection, writer, capacity=3, retention_s=60)
    try:
        bus.restart(TOPIC)
        events = [bus.publish(TOPIC, "message.create", {"n": i}) for i in range(450)]
        writer.flush(5)
        # MAXLEN ~ trims whole nodes of the stream: the first ones are gone for sure.
        assert bus.read(TOPIC, events[0].id).reset
        kept = bus.read(TOPIC, events[-2].id)
        assert not kept.reset and [e.data["n"] for e in kept.events] == [449]
    finally:
        bus.close()
        writer.close()
        connection.close()


def test_an_id_that_fell_out_of_the_buffer_is_a_reset() -> None:
    bus = MemoryEventBus(3)
    start = bus.cursor(TOPIC)
    events = publish(bus, 5)  # 0 and 1 fell out
    assert bus.read(TOPIC, start).reset
    assert bus.read(TOPIC, events[0].id).reset  # what came after it (1) is gone too
    kept = bus.read(TOPIC, events[1].id)  # what came after it (2, 3, 4) is all there
    assert not kept.reset and [e.data["n"] for e in kept.events] == [2, 3, 4]
    reset = bus.read(TOPIC, start)
    assert reset.events == () and reset.cursor == events[-1].id  # go on from here


@pytest.mark.parametrize(
    "stale",
    [
        "",
        "nonsense",
        "abc-1",
        "-1",
        "x-99999999999999999999",
        "deadbeef-12",
        "deadbeef.1-0",
        "x.99999999999999-0",
    ],
)
def test_ids_from_another_epoch_or_made_up_are_a_reset(buses: Buses, stale: str) -> None:
    bus = buses.make(10)
    publish(bus, 2)
    assert bus.read(TOPIC, stale).reset


def test_a_restart_makes_earlier_ids_a_reset(buses: Buses) -> None:
    bus = buses.make(10)
    old = publish(bus, 2)
    bus.restart(TOPIC)
    settle(bus)
    assert bus.read(TOPIC, old[-1].id).reset
    fresh = bus.cursor(TOPIC)
    assert fresh[:8] != old[-1].id[:8]
    publish(bus, 1)
    assert len(bus.read(TOPIC, fresh).events) == 1


def test_a_read_waits_up_to_its_timeout_for_the_next_event(buses: Buses) -> None:
    bus = buses.make(10)
    publish(bus, 1)
    cursor = bus.cursor(TOPIC)
    started = time.monotonic()
    assert bus.read(TOPIC, cursor, timeout=0.2).events == ()
    assert time.monotonic() - started >= 0.19

    timer = threading.Timer(0.1, publish, args=(bus, 1))
    timer.start()
    started = time.monotonic()
    batch = bus.read(TOPIC, cursor, timeout=5)
    timer.join()
    assert len(batch.events) == 1 and time.monotonic() - started < 4


def test_after_none_waits_for_the_next_event_only(buses: Buses) -> None:
    bus = buses.make(10)
    publish(bus, 3)
    timer = threading.Timer(0.05, lambda: bus.publish(TOPIC, "member.join", {"id": "9"}))
    timer.start()
    batch = bus.read(TOPIC, None, timeout=5)
    timer.join()
    assert [e.type for e in batch.events] == ["member.join"]


def test_many_readers_each_see_every_event(buses: Buses) -> None:
    bus = buses.make(1000)
    bus.restart(TOPIC)
    settle(bus)
    start = bus.cursor(TOPIC)
    seen: dict[int, list[int]] = {}

    def reader(k: int) -> None:
        cursor, got = start, []
        while len(got) < 200:
            batch = bus.read(TOPIC, cursor, timeout=5)
            assert not batch.reset
            got.extend(e.data["n"] for e in batch.events)
            cursor = batch.cursor
        seen[k] = got

    readers = [threading.Thread(target=reader, args=(k,)) for k in range(20)]
    for thread in readers:
        thread.start()
    publish(bus, 200)
    for thread in readers:
        thread.join(10)
    assert len(seen) == 20 and all(got == list(range(200)) for got in seen.values())


def test_close_wakes_waiting_readers() -> None:
    bus = MemoryEventBus(10)
    done = threading.Event()

    def wait() -> None:
        bus.read(TOPIC, None, timeout=30)
        done.set()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.05)
    bus.close()
    assert done.wait(5)
    thread.join(5)


def test_subscribers_hear_every_event_and_one_broken_subscriber_harms_none(buses: Buses) -> None:
    bus = buses.make(10)
    heard: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("bug")

    bus.subscribe(broken)
    unsubscribe = bus.subscribe(lambda event: heard.append(event.id))
    events = publish(bus, 2)
    unsubscribe()
    publish(bus, 1)
    assert heard == [e.id for e in events]


# -- fed by discord.py, from the sandbox -------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    scenario = write_scenario(tmp_path_factory.mktemp("bus") / "world.json", 100)
    server = SandboxServer(
        SandboxConfig(port=0, scenario=scenario, member_request_cooldown_s=0.2)
    ).start()
    yield server
    server.stop()


@pytest.fixture
def control(sandbox: SandboxServer) -> Iterator[Control]:
    client = Control(sandbox.base_url)
    yield client
    client.close()


@pytest.fixture
def bots(sandbox: SandboxServer) -> Iterator[Bots]:
    made = Bots(sandbox, EVENT_BUFFER_SIZE="50")
    yield made
    made.close()


def read_until(bots: Bots, topic: str, cursor: str, count: int) -> list[Event]:
    events: list[Event] = []
    deadline = time.monotonic() + 10
    while len(events) < count and time.monotonic() < deadline:
        batch = bots.runtime.bus.read(topic, cursor, timeout=1)
        assert not batch.reset
        events.extend(batch.events)
        cursor = batch.cursor
    return events


def test_gateway_changes_become_events_in_the_rest_shapes(bots: Bots, control: Control) -> None:
    session = bots.login(MAIN_TOKEN)
    guild = session.record.guild_ids[0]
    topic = topic_of(fingerprint(MAIN_TOKEN), guild)
    cursor = bots.runtime.bus.cursor(topic)
    channel = next(c for c in session.channels() if c["name"] != "staff-only")

    added = control.request("POST", f"/guilds/{guild}/members", username="eventful")
    user = added["user"]["id"]
    control.request("PATCH", f"/guilds/{guild}/members/{user}", nick="Eve")
    posted = control.request(
        "POST", f"/channels/{channel['id']}/messages", author_id=user, content="hello bus"
    )
    control.request(
        "PATCH", f"/channels/{channel['id']}/messages/{posted['id']}", content="hello again"
    )
    control.request("DELETE", f"/channels/{channel['id']}/messages/{posted['id']}")
    room = control.request("POST", f"/guilds/{guild}/channels", name="events-room", type="text")
    control.request("DELETE", f"/channels/{room['id']}")
    control.request("DELETE", f"/guilds/{guild}/members/{user}")

    events = read_until(bots, topic, cursor, 8)
    assert [e.type for e in events] == [
        "member.join",
        "member.update",
        "message.create",
        "message.update",
        "message.delete",
        "channel.create",
        "channel.delete",
        "member.leave",
    ]
    assert set(e.type for e in events) <= set(EVENT_TYPES)
    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids) and all(e.guild_id == guild for e in events)
    join, update, create, edit, delete, made, gone, leave = (e.data for e in events)
    # The same shapes as GET /api/members, /api/messages and /api/channels.
    member_keys = set(json.loads(session.members(limit=1).plain())[0])
    assert set(join) == member_keys and join["username"] == "eventful"
    assert update["displayName"] == "Eve"
    message_keys = set(session.messages(channel["id"], limit=1)[0])
    assert set(create) == message_keys and create["content"] == "hello bus"
    assert edit["content"] == "hello again" and edit["editedTimestamp"] is not None
    assert delete == {"id": posted["id"], "channelId": channel["id"]}
    assert set(made) == set(channel) and made["name"] == "events-room" and made["canSend"]
    assert gone == {"id": room["id"]} and leave == {"id": user}


def test_events_keep_the_published_state_current(bots: Bots, control: Control) -> None:
    session = bots.login(MAIN_TOKEN)
    guild = session.record.guild_ids[0]
    before = json.loads(session.members().plain())
    added = control.request("POST", f"/guilds/{guild}/members", username="published")
    wait_until(
        lambda: added["user"]["id"] in {m["id"] for m in json.loads(session.members().plain())},
        what="the member list to include the newcomer",
    )
    room = control.request("POST", f"/guilds/{guild}/channels", name="published-room", type="text")
    wait_until(
        lambda: room["id"] in {c["id"] for c in session.channels()},
        what="the channel list to include the new channel",
    )
    control.request("DELETE", f"/guilds/{guild}/members/{added['user']['id']}")
    control.request("DELETE", f"/channels/{room['id']}")
    wait_until(
        lambda: len(json.loads(session.members().plain())) == len(before),
        what="the member to leave the list",
    )


def test_a_burst_beyond_the_buffer_is_a_reset_for_a_slow_reader(
    bots: Bots, control: Control
) -> None:
    session = bots.login(MAIN_TOKEN)
    guild = session.record.guild_ids[0]
    topic = topic_of(fingerprint(MAIN_TOKEN), guild)
    cursor = bots.runtime.bus.cursor(topic)
    channel = next(c for c in session.channels() if c["name"] != "staff-only")
    for n in range(60):  # the buffer keeps 50
        control.request("POST", f"/channels/{channel['id']}/messages", content=f"burst {n}")
    wait_until(lambda: bots.runtime.bus.read(topic, cursor).reset, what="the reset")
    tail = bots.runtime.bus.read(topic, bots.runtime.bus.read(topic, cursor).cursor)
    assert tail.events == () and not tail.reset


def test_a_new_gateway_session_restarts_the_topic(bots: Bots, control: Control) -> None:
    session = bots.login(MAIN_TOKEN)
    topic = topic_of(fingerprint(MAIN_TOKEN), session.record.guild_ids[0])
    cursor = bots.runtime.bus.cursor(topic)
    identified = control.gateway()["identified"]
    control.request("POST", "/gateway/invalidate")  # events of the old session may be lost
    wait_until(lambda: control.gateway()["identified"] == identified + 1, what="a new IDENTIFY")
    wait_until(lambda: bots.runtime.bus.read(topic, cursor).reset, what="the reset")
