"""The sandbox gateway at the wire level: framing, compression, heartbeats, IDENTIFY,
READY / GUILD_CREATE, close codes, sharding and the session start budget.

A raw aiohttp websocket client speaks to a real SandboxServer; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from membersense.sandbox.gateway_protocol import zstd_available

from .conftest import TEST_TOKEN
from .gateway_support import (
    GUILD_MEMBERS,
    GUILD_MESSAGES,
    GUILDS,
    MESSAGE_CONTENT,
    RawGateway,
    control,
)


def _scenario(tmp_path, document):
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(document))
    return str(path)


@pytest.fixture
def intents_world(tmp_path, sandbox_factory):
    """Two guilds; ``full-token`` has every privileged intent, ``plain-token`` none."""
    scenario = _scenario(
        tmp_path,
        {
            "bots": [{"token": "full-token"}, {"token": "plain-token", "privileged_intents": []}],
            "guilds": [
                {"name": "Alpha", "members": 8, "channels": 1, "messages": 0},
                {
                    "name": "Beta",
                    "members": 4,
                    "channels": 1,
                    "messages": 0,
                    "bots": ["full-token"],
                },
            ],
        },
    )
    return sandbox_factory(scenario=scenario)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zlib-stream"])
def test_hello_then_heartbeat_ack(sandbox, compress):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url, compress=compress) as gw:
            hello = await gw.hello()
            assert hello == {
                "t": None,
                "s": None,
                "op": 10,
                "d": {"heartbeat_interval": 41250, "_trace": ["membersense-sandbox"]},
            }
            for _ in range(3):
                await gw.send({"op": 1, "d": None})
                assert await gw.recv() == {"t": None, "s": None, "op": 11, "d": None}

    asyncio.run(body())


def test_zlib_stream_is_one_stream_flushed_per_message(sandbox):
    """Each binary frame ends with Z_SYNC_FLUSH and only inflates with the previous frames' context."""

    async def body():
        async with RawGateway.connect(sandbox.gateway_url, compress=True) as gw:
            frames = []
            await gw.send(
                {"op": 2, "d": {"token": TEST_TOKEN, "intents": GUILDS, "properties": {}}}
            )
            for _ in range(3):  # HELLO, READY, GUILD_CREATE
                msg = await gw.ws.receive(timeout=5)
                frames.append(bytes(msg.data))
            assert all(f.endswith(b"\x00\x00\xff\xff") for f in frames)
            import zlib

            inflater = zlib.decompressobj()
            payloads = [json.loads(inflater.decompress(f)) for f in frames]
            assert [p["op"] for p in payloads] == [10, 0, 0]
            assert [p["t"] for p in payloads[1:]] == ["READY", "GUILD_CREATE"]
            with pytest.raises(zlib.error):
                zlib.decompressobj().decompress(frames[2])  # needs the shared stream

    asyncio.run(body())


def test_zstd_stream(sandbox):
    assert zstd_available(), "zstandard is a dependency (setup.cfg)"
    import zstandard

    async def body():
        async with RawGateway.connect(
            sandbox.gateway_url, query={"v": "10", "encoding": "json", "compress": "zstd-stream"}
        ) as gw:
            stream = zstandard.ZstdDecompressor().decompressobj()  # one stream per connection
            hello = await gw.ws.receive(timeout=5)
            assert hello.type.name == "BINARY"
            payload = json.loads(stream.decompress(hello.data))
            assert payload["op"] == 10 and payload["d"]["heartbeat_interval"] > 0
            await gw.ws.send_str(json.dumps({"op": 1, "d": None}))
            ack = await gw.ws.receive(timeout=5)
            assert json.loads(stream.decompress(ack.data))["op"] == 11

    asyncio.run(body())


def test_heartbeats_keep_the_socket_and_silence_closes_it_with_4009(sandbox_factory):
    server = sandbox_factory(heartbeat_interval_ms=100)  # timeout: 0.15 s + 1 s slack

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            assert (await gw.hello())["d"]["heartbeat_interval"] == 100
            loop = asyncio.get_running_loop()
            until = loop.time() + 1.6  # longer than the timeout: only the heartbeats keep it open
            while loop.time() < until:
                await gw.send({"op": 1, "d": None})
                assert (await gw.recv())["op"] == 11
                await asyncio.sleep(0.1)
            started = loop.time()
            closed = await gw.expect_close(timeout=5)
            assert closed.code == 4009
            assert 0.9 < loop.time() - started < 3.0

    asyncio.run(body())


def test_ready_and_guild_create(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            await gw.hello()
            await gw.send(
                {
                    "op": 2,
                    "d": {
                        "token": TEST_TOKEN,
                        "intents": GUILDS | GUILD_MEMBERS,
                        "properties": {"os": "linux", "browser": "t", "device": "t"},
                        "large_threshold": 250,
                    },
                }
            )
            ready = await gw.recv()
            assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
            d = ready["d"]
            bot = sandbox.run(lambda: sandbox.world.bot_for_token(TEST_TOKEN))
            guild = sandbox.run(lambda: sandbox.world.guilds_of(bot)[0])
            assert d["v"] == 10
            assert d["user"]["id"] == str(bot.id) and d["user"]["bot"] is True
            assert d["guilds"] == [{"id": str(guild.id), "unavailable": True}]
            assert len(d["session_id"]) == 32
            assert d["resume_gateway_url"] == sandbox.gateway_url
            assert d["application"] == {
                "id": str(bot.application_id),
                "flags": bot.application_flags,
            }
            assert "shard" not in d

            created = await gw.recv()
            assert (created["t"], created["s"]) == ("GUILD_CREATE", 2)
            g = created["d"]
            assert g["id"] == str(guild.id) and g["unavailable"] is False
            assert g["member_count"] == 51 and g["large"] is False  # 50 humans + the bot, under 250
            assert len(g["members"]) == 51
            assert {c["id"] for c in g["channels"]} == {str(c.id) for c in guild.channels}
            assert len(g["roles"]) == len(guild.roles)
            for key in ("threads", "presences", "voice_states", "emojis", "stickers"):
                assert g[key] == []

    asyncio.run(body())


def test_large_guild_sends_only_the_bots_own_member(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, (guild,) = await gw.identify(TEST_TOKEN, GUILDS)  # default large_threshold: 50
            assert guild["large"] is True and guild["member_count"] == 51
            assert [m["user"]["id"] for m in guild["members"]] == [ready["user"]["id"]]

    asyncio.run(body())


@pytest.mark.parametrize(
    ("identify", "code"),
    [
        ({"token": "not-a-token", "intents": GUILDS}, 4004),
        ({"token": 12, "intents": GUILDS}, 4004),
        ({"token": TEST_TOKEN}, 4013),
        ({"token": TEST_TOKEN, "intents": GUILDS | 1 << 30}, 4013),
        ({"token": TEST_TOKEN, "intents": 1 << 17}, 4013),
        ({"token": TEST_TOKEN, "intents": -1}, 4013),
        ({"token": TEST_TOKEN, "intents": GUILDS, "shard": [2, 2]}, 4010),
        ({"token": TEST_TOKEN, "intents": GUILDS, "shard": [0]}, 4010),
    ],
    ids=[
        "unknown-token",
        "token-not-string",
        "no-intents",
        "unknown-bit",
        "reserved-bit",
        "negative",
        "shard-out-of-range",
        "shard-malformed",
    ],
)
def test_identify_errors_close_the_socket(sandbox, identify, code):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            await gw.hello()
            await gw.send({"op": 2, "d": {"properties": {}, **identify}})
            assert (await gw.expect_close()).code == code

    asyncio.run(body())


def test_privileged_intent_not_granted_closes_4014(intents_world):
    async def body():
        for intents in (GUILD_MEMBERS, 1 << 8, MESSAGE_CONTENT):
            async with RawGateway.connect(intents_world.gateway_url) as gw:
                await gw.hello()
                await gw.send(
                    {
                        "op": 2,
                        "d": {
                            "token": "plain-token",
                            "intents": GUILDS | intents,
                            "properties": {},
                        },
                    }
                )
                assert (await gw.expect_close()).code == 4014
        async with RawGateway.connect(
            intents_world.gateway_url
        ) as gw:  # unprivileged intents are fine
            await gw.identify("plain-token", GUILDS | GUILD_MESSAGES)

    asyncio.run(body())


@pytest.mark.parametrize(
    ("send", "code"),
    [
        ('{"op": 8, "d": {"guild_id": "1", "query": "", "limit": 0}}', 4003),
        ('{"op": 3, "d": {"status": "online"}}', 4003),
        ('{"op": 99, "d": null}', 4001),
        ("not json", 4002),
        ('["op", 1]', 4002),
        ('{"op": "1"}', 4002),
        ('{"op": 1, "d": "' + "x" * 5000 + '"}', 4002),
    ],
    ids=[
        "members-before-identify",
        "presence-before-identify",
        "unknown-op",
        "not-json",
        "not-object",
        "op-not-int",
        "oversized",
    ],
)
def test_bad_payloads_close_the_socket(sandbox, send, code):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            await gw.hello()
            await gw.ws.send_str(send)
            assert (await gw.expect_close()).code == code

    asyncio.run(body())


def test_second_identify_closes_4005(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, GUILDS)
            await gw.send(
                {"op": 2, "d": {"token": TEST_TOKEN, "intents": GUILDS, "properties": {}}}
            )
            assert (await gw.expect_close()).code == 4005

    asyncio.run(body())


def test_presence_and_voice_updates_are_accepted(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, GUILDS)
            await gw.send(
                {"op": 3, "d": {"since": None, "activities": [], "status": "idle", "afk": False}}
            )
            assert await gw.sync() == []  # still open, nothing but the ACK came back

    asyncio.run(body())


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"v": "10", "encoding": "etf"}, 4002),
        ({"v": "9", "encoding": "json"}, 4012),
        ({"v": "10", "encoding": "json", "compress": "gzip"}, 4000),
    ],
    ids=["etf", "v9", "unknown-compress"],
)
def test_unsupported_connection_parameters_are_refused(sandbox, query, code):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url, query=query) as gw:
            closed = await gw.expect_close()
            assert closed.code == code
            assert closed.reason  # says why

    asyncio.run(body())


def test_client_event_rate_limit_closes_4008(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, GUILDS)
            for _ in range(125):
                await gw.send(
                    {
                        "op": 3,
                        "d": {"since": None, "activities": [], "status": "online", "afk": False},
                    }
                )
            assert (await gw.expect_close()).code == 4008

    asyncio.run(body())


def test_session_start_budget_answers_invalid_session(sandbox_factory, rest_client):
    server = sandbox_factory(session_start_limit=1)

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, GUILDS)
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.hello()
            await gw.send(
                {"op": 2, "d": {"token": TEST_TOKEN, "intents": GUILDS, "properties": {}}}
            )
            assert await gw.recv() == {"t": None, "s": None, "op": 9, "d": False}

    asyncio.run(body())
    gateway_bot = rest_client(server).get("/gateway/bot").json()
    assert gateway_bot["session_start_limit"]["remaining"] == 0
    assert server.run(lambda: server.state.gateway.stats())["identify_refused_budget"] == 1


def test_shards_split_guilds_and_events(tmp_path, sandbox_factory):
    scenario = _scenario(
        tmp_path,
        {
            "guilds": [
                {"name": f"G{i}", "members": 3, "channels": 1, "messages": 0} for i in range(6)
            ]
        },
    )
    server = sandbox_factory(scenario=scenario)
    guild_ids = server.run(lambda: list(server.world.guilds))
    # The smallest shard count that spreads these guilds over more than one shard.
    num_shards = next(n for n in range(2, 64) if len({(g >> 22) % n for g in guild_ids}) > 1)

    async def body():
        shards = [RawGateway.connect(server.gateway_url) for _ in range(num_shards)]
        gws = [await shard.__aenter__() for shard in shards]
        try:
            seen = set()
            for shard_id, gw in enumerate(gws):
                ready, guilds = await gw.identify(TEST_TOKEN, GUILDS, shard=[shard_id, num_shards])
                assert ready["shard"] == [shard_id, num_shards]
                mine = {int(g["id"]) for g in guilds}
                assert mine == {g for g in guild_ids if (g >> 22) % num_shards == shard_id}
                seen |= mine
            assert seen == set(guild_ids)
            # A channel created in one guild reaches that guild's shard only.
            target = guild_ids[-1]
            target_shard = (target >> 22) % num_shards
            await control(gws[0], server, "POST", f"/guilds/{target}/channels", {"name": "sharded"})
            created = await gws[target_shard].recv_dispatch("CHANNEL_CREATE")
            assert created["d"]["guild_id"] == str(target)
            for shard_id, gw in enumerate(gws):
                if shard_id != target_shard:
                    assert await gw.sync() == []  # nothing was routed here
        finally:
            for shard in shards:
                await shard.__aexit__(None, None, None)

    asyncio.run(body())


def test_closed_gateway_refuses_new_sockets(sandbox_factory):
    server = sandbox_factory()
    server.run(lambda: server.state.gateway.close())

    async def body():
        with pytest.raises(Exception) as info:
            async with RawGateway.connect(server.gateway_url):
                pass
        assert "503" in str(info.value)

    asyncio.run(body())


def test_stats_count_connections(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, GUILDS)
            state = await control(gw, sandbox, "GET", "/state")
            stats = state["gateway"]
            assert stats["connections"] == 1 and stats["identified_connections"] == 1
            assert stats["sessions"] == 1 and stats["identified"] == 1

    asyncio.run(body())
