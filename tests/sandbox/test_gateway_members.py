"""REQUEST_GUILD_MEMBERS (op 8) over a raw socket: chunking, query, user_ids,
presences, nonces, intents and Discord's 30 s cooldown with its RATE_LIMITED answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.fakes import FakeClock

from .conftest import TEST_TOKEN
from .gateway_support import ALL_INTENTS, GUILD_MEMBERS, GUILDS, RawGateway

NAMED = [
    {"username": "zelda", "global_name": "Zelda", "status": "online"},
    {"username": "zeno", "status": "idle"},
    {"username": "quiet.zed", "nick": "Zed", "status": "offline"},
]


@pytest.fixture
def members_world(tmp_path, sandbox_factory):
    """A 2 500-member guild (3 chunks) the test bot is in, a small one, and a fake clock."""
    scenario = tmp_path / "members.json"
    scenario.write_text(
        json.dumps(
            {
                "bots": [
                    {"token": TEST_TOKEN},
                    {"token": "other-token"},
                    {"token": "no-members-token", "privileged_intents": []},
                ],
                "guilds": [
                    {
                        "name": "Big",
                        "members": 2500,
                        "channels": 1,
                        "messages": 0,
                        "named_members": NAMED,
                        "bots": [TEST_TOKEN, "no-members-token"],
                    },
                    {
                        "name": "Small",
                        "members": 5,
                        "channels": 1,
                        "messages": 0,
                        "bots": [TEST_TOKEN, "other-token"],
                    },
                ],
            }
        )
    )
    clock = FakeClock()
    server = sandbox_factory(scenario=str(scenario), clock=clock)
    big, small = server.run(lambda: list(server.world.guilds))
    return server, clock, big, small


async def _chunks(gw: RawGateway) -> list[dict[str, Any]]:
    """Read GUILD_MEMBERS_CHUNK dispatches until the last of one answer."""
    chunks = []
    while True:
        payload = await gw.recv_dispatch("GUILD_MEMBERS_CHUNK")
        chunks.append(payload["d"])
        if payload["d"]["chunk_index"] + 1 == payload["d"]["chunk_count"]:
            return chunks


def test_all_members_arrive_in_chunks_of_1000(members_world):
    server, _, big, _ = members_world
    expected = server.run(lambda: {str(u) for u in server.world.guild(big).members})

    async def body():
        async with RawGateway.connect(server.gateway_url, compress=True) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS)
            seq = gw.seq
            await gw.send(
                {"op": 8, "d": {"guild_id": str(big), "query": "", "limit": 0, "nonce": "n-1"}}
            )
            chunks = await _chunks(gw)
            assert [len(c["members"]) for c in chunks] == [1000, 1000, len(expected) - 2000]
            assert [(c["chunk_index"], c["chunk_count"]) for c in chunks] == [
                (0, 3),
                (1, 3),
                (2, 3),
            ]
            assert {c["nonce"] for c in chunks} == {"n-1"} and {c["guild_id"] for c in chunks} == {
                str(big)
            }
            assert all("not_found" not in c and "presences" not in c for c in chunks)
            ids = [m["user"]["id"] for c in chunks for m in c["members"]]
            assert len(ids) == len(set(ids)) and set(ids) == expected
            assert gw.seq == seq + 3  # every chunk is a numbered dispatch
            member = chunks[0]["members"][0]
            assert {"user", "roles", "joined_at", "deaf", "mute", "flags", "pending"} <= set(member)

    asyncio.run(body())


def test_full_list_is_rate_limited_per_guild_per_bot_for_30_seconds(members_world):
    server, clock, big, small = members_world

    async def body():
        async with (
            RawGateway.connect(server.gateway_url) as gw,
            RawGateway.connect(server.gateway_url) as other,
        ):
            await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await other.identify("other-token", ALL_INTENTS)
            everyone = {"guild_id": str(small), "query": "", "limit": 0}
            await gw.send({"op": 8, "d": {**everyone, "nonce": "first"}})
            assert len(await _chunks(gw)) == 1

            clock.advance(12.5)
            await gw.send({"op": 8, "d": {**everyone, "nonce": "second"}})
            limited = await gw.recv()
            assert (limited["op"], limited["t"]) == (0, "RATE_LIMITED")
            assert limited["d"] == {
                "opcode": 8,
                "retry_after": 17.5,
                "meta": {"guild_id": str(small), "nonce": "second"},
            }
            assert await gw.sync() == []  # and no chunks

            # Other requests are not limited: a query, another guild, another bot.
            await gw.send(
                {"op": 8, "d": {"guild_id": str(small), "query": "z", "limit": 10, "nonce": "q"}}
            )
            assert (await _chunks(gw))[0]["nonce"] == "q"
            await gw.send(
                {"op": 8, "d": {"guild_id": str(big), "query": "", "limit": 0, "nonce": "big"}}
            )
            assert len(await _chunks(gw)) == 3
            await other.send({"op": 8, "d": {**everyone, "nonce": "other-bot"}})
            assert (await _chunks(other))[0]["nonce"] == "other-bot"

            clock.advance(17.5)  # 30 s after the first request
            await gw.send({"op": 8, "d": {**everyone, "nonce": "third"}})
            assert (await _chunks(gw))[0]["nonce"] == "third"

    asyncio.run(body())


def test_query_is_a_case_insensitive_prefix_of_username_or_nick(members_world):
    server, _, big, _ = members_world
    initials = server.run(
        lambda: [m.user.username[0] for m in server.world.guild(big).members.values()]
    )
    common = max(set(initials), key=initials.count)  # a prefix matching well over 100 members
    assert initials.count(common) > 100

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await gw.send(
                {"op": 8, "d": {"guild_id": big, "query": "ZE", "limit": 50, "nonce": "q"}}
            )
            (chunk,) = await _chunks(gw)
            found = {(m["user"]["username"], m["nick"]) for m in chunk["members"]}
            assert {("zelda", None), ("zeno", None), ("quiet.zed", "Zed")} <= found
            assert all(
                u.lower().startswith("ze") or (n or "").lower().startswith("ze") for u, n in found
            )
            assert (chunk["chunk_index"], chunk["chunk_count"]) == (0, 1)

            for limit, most in ((2, 2), (0, 100), (500, 100)):
                await gw.send(
                    {"op": 8, "d": {"guild_id": str(big), "query": common.upper(), "limit": limit}}
                )
                (chunk,) = await _chunks(gw)
                assert len(chunk["members"]) == most, limit
                assert "nonce" not in chunk

            await gw.send(
                {"op": 8, "d": {"guild_id": str(big), "query": "no-such-prefix-xyz", "limit": 5}}
            )
            (chunk,) = await _chunks(gw)
            assert chunk["members"] == [] and chunk["chunk_count"] == 1

    asyncio.run(body())


def test_empty_query_with_a_limit_returns_that_many(members_world):
    server, _, big, _ = members_world

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await gw.send({"op": 8, "d": {"guild_id": str(big), "query": "", "limit": 7}})
            (chunk,) = await _chunks(gw)
            assert len(chunk["members"]) == 7

    asyncio.run(body())


def test_user_ids_with_not_found(members_world):
    server, _, big, _ = members_world
    known = server.run(lambda: [str(u) for u in list(server.world.guild(big).members)[:3]])

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await gw.send(
                {
                    "op": 8,
                    "d": {
                        "guild_id": str(big),
                        "user_ids": known + ["1234", "5678"],
                        "nonce": "ids",
                    },
                }
            )
            (chunk,) = await _chunks(gw)
            assert [m["user"]["id"] for m in chunk["members"]] == known
            assert chunk["not_found"] == ["1234", "5678"] and chunk["nonce"] == "ids"

            await gw.send(
                {"op": 8, "d": {"guild_id": str(big), "user_ids": known[0]}}
            )  # one id, not a list
            (chunk,) = await _chunks(gw)
            assert [m["user"]["id"] for m in chunk["members"]] == known[:1] and chunk[
                "not_found"
            ] == []

            many = server.run(lambda: [str(u) for u in list(server.world.guild(big).members)[:150]])
            await gw.send({"op": 8, "d": {"guild_id": str(big), "user_ids": many}})
            (chunk,) = await _chunks(gw)
            assert len(chunk["members"]) == 100  # Discord answers at most 100 user_ids

    asyncio.run(body())


def test_presences_need_the_intent_and_leave_offline_members_out(members_world):
    server, _, big, _ = members_world
    ids = server.run(
        lambda: {
            m.user.username: str(m.user.id)
            for m in server.world.guild(big).members.values()
            if m.user.username in ("zelda", "zeno", "quiet.zed")
        }
    )

    async def body():
        request = {"guild_id": str(big), "user_ids": sorted(ids.values()), "presences": True}
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await gw.send({"op": 8, "d": request})
            (chunk,) = await _chunks(gw)
            statuses = {p["user"]["id"]: p["status"] for p in chunk["presences"]}
            assert statuses == {ids["zelda"]: "online", ids["zeno"]: "idle"}
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS & ~(1 << 8))  # no GUILD_PRESENCES
            await gw.send({"op": 8, "d": request})
            (chunk,) = await _chunks(gw)
            assert "presences" not in chunk and len(chunk["members"]) == 3

    asyncio.run(body())


def test_long_nonces_are_not_echoed(members_world):
    server, _, _, small = members_world

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await gw.send(
                {"op": 8, "d": {"guild_id": str(small), "query": "", "limit": 0, "nonce": "x" * 33}}
            )
            (chunk,) = await _chunks(gw)
            assert "nonce" not in chunk

    asyncio.run(body())


def test_guilds_the_bot_is_not_in_get_no_answer(members_world):
    server, _, big, _ = members_world

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify("other-token", ALL_INTENTS)  # other-token is only in the small guild
            for guild_id in (str(big), "12345"):
                await gw.send({"op": 8, "d": {"guild_id": guild_id, "query": "", "limit": 0}})
            assert await gw.sync() == []

    asyncio.run(body())


def test_member_list_without_guild_members_intent(members_world):
    server, _, big, _ = members_world

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify("no-members-token", GUILDS)
            guild = str(
                server.run(
                    lambda: (
                        next(
                            iter(
                                server.world.guilds_of(
                                    server.world.bot_for_token("no-members-token")
                                )
                            )
                        ).id
                    )
                )
            )
            # A prefix query and user_ids work without GUILD_MEMBERS ...
            await gw.send({"op": 8, "d": {"guild_id": guild, "query": "a", "limit": 3}})
            assert len(await _chunks(gw)) == 1
            # ... the whole list does not (Discord closes with 4013).
            await gw.send({"op": 8, "d": {"guild_id": guild, "query": "", "limit": 0}})
            assert (await gw.expect_close()).code == 4013

    asyncio.run(body())


@pytest.mark.parametrize(
    "d",
    [
        {"guild_id": "1"},
        {"guild_id": ["1", "2"], "query": "", "limit": 0},
        {"guild_id": "abc", "query": "", "limit": 0},
        {"guild_id": "1", "query": "", "limit": -1},
        {"guild_id": "1", "query": 5, "limit": 0},
        {"guild_id": "1", "user_ids": ["x"]},
        "not an object",
    ],
    ids=[
        "no-query-or-ids",
        "two-guilds",
        "bad-guild-id",
        "negative-limit",
        "query-not-string",
        "bad-user-id",
        "not-object",
    ],
)
def test_malformed_requests_close_4001(sandbox, d):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await gw.send({"op": 8, "d": d})
            assert (await gw.expect_close()).code == 4001

    asyncio.run(body())


def test_guild_id_as_a_one_element_list_and_as_an_int(sandbox):
    guild_id = sandbox.run(lambda: next(iter(sandbox.world.guilds)))

    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS | GUILD_MEMBERS)
            await gw.send({"op": 8, "d": {"guild_id": [str(guild_id)], "query": "", "limit": 3}})
            assert len((await _chunks(gw))[0]["members"]) == 3
            await gw.send({"op": 8, "d": {"guild_id": guild_id, "query": "", "limit": 3}})
            assert len((await _chunks(gw))[0]["members"]) == 3

    asyncio.run(body())
