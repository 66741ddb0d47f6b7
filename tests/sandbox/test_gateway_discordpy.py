"""Unmodified discord.py 2.7 against the sandbox gateway: login, READY, chunking a
10 000-member guild, every dispatch as its discord.py event, RESUME after a drop,
op 7, op 9, and the close codes discord.py turns into exceptions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import discord
import pytest

from .conftest import TEST_TOKEN
from .gateway_support import control, poll, run_client

#: discord.py waits this long after the last GUILD_CREATE before on_ready (default 2 s).
READY_WAIT = 0.2


def _client(intents: discord.Intents | None = None, **options: Any) -> discord.Client:
    return discord.Client(
        intents=intents or discord.Intents.all(), guild_ready_timeout=READY_WAIT, **options
    )


async def _identify_at_once(shard_id: int | None, *, initial: bool = False) -> None:
    """A ``before_identify_hook`` without discord.py's 5 s pause before each re-IDENTIFY."""


def _gateway_stats(server: Any) -> dict[str, Any]:
    return server.run(lambda: server.state.gateway.stats())


@pytest.fixture
def server(sandbox_factory, point_discord):
    """A small-world sandbox that discord.py points at."""
    sandbox = sandbox_factory(heartbeat_interval_ms=1000)
    point_discord(sandbox)
    return sandbox


def test_login_ready_and_guild_state(server):
    bot = server.run(lambda: server.world.bot_for_token(TEST_TOKEN))
    guild = server.run(lambda: server.world.guilds_of(bot)[0])
    client = _client()

    async def body():
        await client.wait_until_ready()
        assert client.user.id == bot.id and client.user.bot
        assert client.application_id == bot.application_id
        assert client.application_flags.gateway_guild_members_limited
        (g,) = client.guilds
        assert g.id == guild.id and g.name == guild.name
        assert (
            g.member_count == 51 and g.chunked and len(g.members) == 51
        )  # inline: 51 <= large_threshold 250
        assert g.me.id == bot.id
        assert {c.id for c in g.channels} == {c.id for c in guild.channels}
        assert {r.id for r in g.roles} == {r.id for r in guild.roles}
        assert client.ws.session_id and client.ws.sequence == 2  # READY, GUILD_CREATE
        assert client.latency < 5

    asyncio.run(run_client(client, TEST_TOKEN, body))


def test_chunking_a_10000_member_guild(sandbox_factory, point_discord):
    server = sandbox_factory(members=10_000, channels=1, messages=0)
    point_discord(server)
    client = _client()

    async def body():
        guild = await poll(
            lambda: client.guilds[0] if client.guilds and client.guilds[0].chunked else None,
            timeout=20,
            interval=0.005,
        )
        assert len(guild.members) == guild.member_count == 10_001
        assert guild.large
        await client.wait_until_ready()

    # How fast: benchmarks/sandbox_chunking.py (no timing in tests).
    asyncio.run(run_client(client, TEST_TOKEN, body))
    stats = _gateway_stats(server)
    assert stats["member_requests"] == 1


def test_query_members_over_the_gateway(server):
    client = _client()

    async def body():
        await client.wait_until_ready()
        guild = client.guilds[0]
        some = [m for m in guild.members if not m.bot][:2]
        prefix = some[0].name[:3]
        found = await guild.query_members(prefix, limit=5)
        assert found and all(
            m.name.lower().startswith(prefix.lower())
            or (m.nick or "").lower().startswith(prefix.lower())
            for m in found
        )
        by_id = await guild.query_members(user_ids=[m.id for m in some])
        assert {m.id for m in by_id} == {m.id for m in some}

    asyncio.run(run_client(client, TEST_TOKEN, body))


def test_every_dispatch_arrives_as_its_discordpy_event(server):
    client = _client()

    async def body():
        await client.wait_until_ready()
        guild = client.guilds[0]
        channel = next(c for c in guild.text_channels)
        async with aiohttp.ClientSession() as http:

            async def call(method: str, path: str, payload: Any = None) -> Any:
                return await control(http, server, method, path, payload)

            async def expect(event: str, action, check=None):
                waiter = asyncio.ensure_future(client.wait_for(event, check=check, timeout=10))
                await asyncio.sleep(0)
                result = await action()
                return await waiter, result

            member, added = await expect(
                "member_join",
                lambda: call(
                    "POST",
                    f"/guilds/{guild.id}/members",
                    {"username": "dpy.joiner", "nick": "Joiner"},
                ),
            )
            assert (
                member.id == int(added["user"]["id"])
                and member.nick == "Joiner"
                and member.guild == guild
            )
            assert guild.get_member(member.id) is member

            (before, after), _ = await expect(
                "member_update",
                lambda: call(
                    "PATCH", f"/guilds/{guild.id}/members/{member.id}", {"nick": "Renamed"}
                ),
            )
            assert (before.nick, after.nick) == ("Joiner", "Renamed")

            message, posted = await expect(
                "message",
                lambda: call(
                    "POST",
                    f"/channels/{channel.id}/messages",
                    {"content": "hello discord.py", "author_id": str(member.id)},
                ),
            )
            assert message.id == int(posted["id"]) and message.content == "hello discord.py"
            assert message.author.id == member.id and message.channel == channel

            (old, new), _ = await expect(
                "message_edit",
                lambda: call(
                    "PATCH", f"/channels/{channel.id}/messages/{message.id}", {"content": "edited"}
                ),
            )
            assert (old.content, new.content) == (
                "hello discord.py",
                "edited",
            ) and new.edited_at is not None

            deleted, _ = await expect(
                "message_delete",
                lambda: call("DELETE", f"/channels/{channel.id}/messages/{message.id}"),
            )
            assert deleted.id == message.id

            removed, _ = await expect(
                "member_remove", lambda: call("DELETE", f"/guilds/{guild.id}/members/{member.id}")
            )
            assert removed.id == member.id and guild.get_member(member.id) is None

            created, payload = await expect(
                "guild_channel_create",
                lambda: call(
                    "POST", f"/guilds/{guild.id}/channels", {"name": "dpy-new", "topic": "fresh"}
                ),
            )
            assert (
                created.id == int(payload["id"])
                and created.name == "dpy-new"
                and created.topic == "fresh"
            )
            assert isinstance(created, discord.TextChannel)

            (before_ch, after_ch), _ = await expect(
                "guild_channel_update",
                lambda: call("PATCH", f"/channels/{created.id}", {"name": "dpy-renamed"}),
            )
            assert (before_ch.name, after_ch.name) == ("dpy-new", "dpy-renamed")

            gone, _ = await expect(
                "guild_channel_delete", lambda: call("DELETE", f"/channels/{created.id}")
            )
            assert gone.id == created.id and guild.get_channel(created.id) is None

    asyncio.run(run_client(client, TEST_TOKEN, body))


def test_message_content_is_empty_without_the_intent(server):
    client = _client(discord.Intents.default())  # no privileged intents

    async def body():
        await client.wait_until_ready()
        channel = client.guilds[0].text_channels[0]
        waiter = asyncio.ensure_future(client.wait_for("message", timeout=10))
        async with aiohttp.ClientSession() as http:
            await control(
                http, server, "POST", f"/channels/{channel.id}/messages", {"content": "hidden"}
            )
        message = await waiter
        assert message.content == "" and message.channel == channel

    asyncio.run(run_client(client, TEST_TOKEN, body))


def test_resume_after_drop_replays_what_was_missed(server):
    client = _client()

    async def body():
        await client.wait_until_ready()
        guild = client.guilds[0]
        session_id = client.ws.session_id
        resumed = asyncio.ensure_future(client.wait_for("resumed", timeout=10))
        joined = asyncio.ensure_future(client.wait_for("member_join", timeout=10))

        async def drop_then_join():
            # One step on the sandbox loop: the member joins while the socket is already cut,
            # so the event can only reach discord.py through RESUME's replay.
            world, gateway = server.world, server.state.gateway
            assert await gateway.drop_all() == 1
            world.add_member(world.guild(guild.id), world.create_user("missed.me"))

        await asyncio.get_running_loop().run_in_executor(None, server.run, drop_then_join)
        member = await joined
        await resumed
        assert member.name == "missed.me" and guild.get_member(member.id) is member
        assert client.ws.session_id == session_id
        stats = _gateway_stats(server)
        assert stats["resumed"] == 1 and stats["identified"] == 1

    asyncio.run(run_client(client, TEST_TOKEN, body))


def test_drop_through_the_control_api_resumes(server):
    client = _client()

    async def body():
        await client.wait_until_ready()
        waiter = asyncio.ensure_future(client.wait_for("resumed", timeout=10))
        async with aiohttp.ClientSession() as http:
            assert await control(http, server, "POST", "/gateway/drop") == {"connections": 1}
        await waiter
        assert _gateway_stats(server)["identified"] == 1

    asyncio.run(run_client(client, TEST_TOKEN, body))


def test_op7_reconnect_resumes(server):
    client = _client()

    async def body():
        await client.wait_until_ready()
        session_id = client.ws.session_id
        waiter = asyncio.ensure_future(client.wait_for("resumed", timeout=10))
        async with aiohttp.ClientSession() as http:
            assert await control(http, server, "POST", "/gateway/reconnect") == {"connections": 1}
        await waiter
        assert client.ws.session_id == session_id
        stats = _gateway_stats(server)
        assert stats["resumed"] == 1 and stats["identified"] == 1

    asyncio.run(run_client(client, TEST_TOKEN, body))


def test_op9_invalidate_identifies_again(server):
    client = _client()
    client.before_identify_hook = _identify_at_once

    async def body():
        await client.wait_until_ready()
        session_id = client.ws.session_id
        waiter = asyncio.ensure_future(client.wait_for("ready", timeout=10))
        async with aiohttp.ClientSession() as http:
            assert await control(http, server, "POST", "/gateway/invalidate") == {"connections": 1}
        await waiter
        assert client.ws.session_id != session_id
        assert client.guilds[0].chunked
        assert _gateway_stats(server)["identified"] == 2

    asyncio.run(run_client(client, TEST_TOKEN, body))


def test_revoked_token_closes_4004(server):
    client = _client()

    async def body():
        await client.wait_until_ready()
        async with aiohttp.ClientSession() as http:
            await control(http, server, "POST", f"/tokens/{TEST_TOKEN}/revoke")
        await asyncio.sleep(30)  # client.start() raises first

    with pytest.raises(discord.ConnectionClosed) as info:
        asyncio.run(run_client(client, TEST_TOKEN, body))
    assert info.value.code == 4004


def test_privileged_intents_not_granted_raise(tmp_path, sandbox_factory, point_discord):
    scenario = tmp_path / "no-privileges.json"
    scenario.write_text(
        json.dumps(
            {
                "bots": [{"token": TEST_TOKEN, "privileged_intents": ["MESSAGE_CONTENT"]}],
                "guilds": [{"name": "G", "members": 3, "channels": 1, "messages": 0}],
            }
        )
    )
    server = sandbox_factory(scenario=str(scenario))
    point_discord(server)

    async def body():
        await asyncio.sleep(30)

    with pytest.raises(discord.PrivilegedIntentsRequired):
        asyncio.run(run_client(_client(discord.Intents.all()), TEST_TOKEN, body))
    # The granted one alone is fine.
    intents = discord.Intents.default()
    intents.message_content = True
    client = _client(intents)
    asyncio.run(run_client(client, TEST_TOKEN, client.wait_until_ready))


def test_unknown_intent_bits_close_4013(server):
    intents = discord.Intents.default()
    intents.value |= 1 << 30

    async def body():
        await asyncio.sleep(30)

    with pytest.raises(discord.ConnectionClosed) as info:
        asyncio.run(run_client(_client(intents), TEST_TOKEN, body))
    assert info.value.code == 4013


def test_empty_session_start_budget_never_gets_ready(sandbox_factory, point_discord):
    server = sandbox_factory(session_start_limit=1)
    point_discord(server)
    first = _client()
    asyncio.run(run_client(first, TEST_TOKEN, first.wait_until_ready))

    second = _client()
    second.before_identify_hook = _identify_at_once
    readies = []

    @second.event
    async def on_ready():
        readies.append(1)

    async def body():
        # discord.py answers op 9 by identifying again; each attempt is refused.
        await poll(lambda: _gateway_stats(server)["identify_refused_budget"] >= 3, timeout=10)
        assert not readies and not second.is_ready()

    asyncio.run(run_client(second, TEST_TOKEN, body))
    assert _gateway_stats(server)["identified"] == 1
