"""discord.py's HTTP side, unmodified, against the sandbox (no gateway involved).

Each test points discord.py's process-wide REST base at a sandbox, logs in with
``Client.login`` and uses the library's own fetch/send/edit/delete paths.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord
import pytest

from membersense.sandbox.server import SandboxServer
from tests.sandbox.conftest import TEST_TOKEN


def world_ids(server: SandboxServer) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        guild = next(iter(server.world.guilds.values()))
        text = next(c for c in guild.channels if c.type == 0)
        return {
            "guild": guild.id,
            "name": guild.name,
            "count": guild.member_count,
            "text": text.id,
            "messages": list(text.message_ids),
            "member_ids": sorted(guild.members),
            "owner": guild.owner_id,
            "bot": server.world.bot_for_token(TEST_TOKEN).id,
        }

    return server.run(read)


def with_client(token: str, body: Callable[[discord.Client], Awaitable[Any]]) -> Any:
    """Log a fresh discord.py client in (REST only), run ``body``, close the client."""

    async def main() -> Any:
        client = discord.Client(intents=discord.Intents.all())
        try:
            await client.login(token)
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(main())


@pytest.fixture
def pointed(sandbox_factory, point_discord):
    """``pointed(**overrides)``: a sandbox that discord.py's REST base points at."""

    def make(**overrides: Any) -> SandboxServer:
        server = sandbox_factory(**overrides)
        point_discord(server)
        return server

    return make


def test_login_and_application(pointed):
    server = pointed()
    ids = world_ids(server)

    async def body(client: discord.Client) -> None:
        assert client.user is not None and client.user.id == ids["bot"] and client.user.bot
        assert client.application_id == ids["bot"]
        app = await client.application_info()
        assert app.owner.id == ids["owner"] and app.bot_public
        assert client.application_flags.gateway_guild_members_limited
        assert client.application_flags.gateway_message_content_limited
        user = await client.fetch_user(ids["owner"])
        assert user.id == ids["owner"] and user.created_at.year >= 2016

    with_client(TEST_TOKEN, body)


def test_bad_token_is_a_login_failure(pointed):
    pointed()
    with pytest.raises(discord.LoginFailure):
        with_client("not-a-sandbox-token", lambda client: asyncio.sleep(0))


def test_guild_members_and_channels(pointed):
    server = pointed(members=2100, channels=2, messages=5)
    ids = world_ids(server)

    async def body(client: discord.Client) -> None:
        guild = await client.fetch_guild(ids["guild"])
        assert guild.name == ids["name"] and guild.approximate_member_count == ids["count"]
        assert guild.owner_id == ids["owner"] and guild.default_role.id == ids["guild"]
        assert any(role.hoist and role.name == "Admin" for role in guild.roles)
        members = [m async for m in guild.fetch_members(limit=None)]  # pages of 1000 with `after`
        assert sorted(m.id for m in members) == ids["member_ids"] and len(members) == 2101
        assert all(m.joined_at is not None and m.joined_at.tzinfo is not None for m in members)
        owner = await guild.fetch_member(ids["owner"])
        assert owner.id == ids["owner"] and owner.guild_permissions.administrator
        channels = await guild.fetch_channels()
        assert {type(c) for c in channels} == {
            discord.TextChannel,
            discord.VoiceChannel,
            discord.CategoryChannel,
        }
        channel = await client.fetch_channel(ids["text"])
        assert isinstance(channel, discord.TextChannel) and channel.category_id is not None
        with pytest.raises(discord.NotFound) as unknown:
            await guild.fetch_member(1)
        assert unknown.value.code == 10007

    with_client(TEST_TOKEN, body)


def test_history_with_every_cursor(pointed):
    server = pointed(messages=250, channels=1)
    ids = world_ids(server)
    all_ids = ids["messages"]  # oldest first

    async def body(client: discord.Client) -> None:
        channel = await client.fetch_channel(ids["text"])
        newest = [m.id async for m in channel.history(limit=None)]
        assert newest == all_ids[::-1]  # three pages of 100 with `before`
        assert [m.id async for m in channel.history(limit=20, oldest_first=True)] == all_ids[
            :20
        ]  # from the start
        before = discord.Object(all_ids[100])
        assert [m.id async for m in channel.history(limit=30, before=before)] == all_ids[70:100][
            ::-1
        ]
        after = discord.Object(all_ids[100])
        assert [m.id async for m in channel.history(limit=130, after=after)] == all_ids[101:231]
        around = discord.Object(all_ids[100])
        assert [m.id async for m in channel.history(limit=11, around=around)] == all_ids[95:106][
            ::-1
        ]
        since = (await channel.fetch_message(all_ids[200])).created_at
        assert [m.id async for m in channel.history(limit=None, after=since)] == all_ids[201:]
        message = await channel.fetch_message(all_ids[-1])
        assert message.author.id in ids["member_ids"] and message.guild is not None

    with_client(TEST_TOKEN, body)


def test_send_reply_edit_delete(pointed):
    server = pointed()
    ids = world_ids(server)

    async def body(client: discord.Client) -> None:
        channel = await client.fetch_channel(ids["text"])
        sent = await channel.send(
            "hello from discord.py", embed=discord.Embed(title="t", description="d")
        )
        assert sent.content == "hello from discord.py" and sent.embeds[0].title == "t"
        assert sent.author.id == ids["bot"]
        target = await channel.fetch_message(ids["messages"][-1])
        reply = await target.reply("a reply", mention_author=False)
        assert reply.reference is not None and reply.reference.message_id == target.id
        assert reply.mentions == []
        pinged = await target.reply("a loud reply")
        assert [u.id for u in pinged.mentions] == [target.author.id]
        edited = await sent.edit(content="edited")
        assert edited.content == "edited" and edited.edited_at is not None
        await sent.delete()
        with pytest.raises(discord.NotFound) as gone:
            await channel.fetch_message(sent.id)
        assert gone.value.code == 10008
        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert too_long.value.status == 400 and too_long.value.code == 50035
        assert "In content: Must be 2000 or fewer in length." in str(too_long.value)
        file_message = await channel.send(
            "with file", file=discord.File(__file__, filename="test.py")
        )
        assert (
            file_message.attachments[0].filename == "test.py"
            and file_message.attachments[0].size > 0
        )
        async with channel.typing():
            pass

    with_client(TEST_TOKEN, body)


def test_forbidden_and_not_found(pointed, tmp_path):
    import json

    scenario = {
        "bots": [{"token": "a"}, {"token": "b"}],
        "guilds": [
            {
                "name": "A",
                "members": 3,
                "channels": 1,
                "messages": 1,
                "bots": ["a"],
                "read_only_channels": ["news"],
            },
            {"name": "B", "members": 3, "channels": 1, "messages": 1, "bots": ["b"]},
        ],
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    server = pointed(scenario=str(path), tokens=())
    guild_b = server.run(lambda: list(server.world.guilds)[1])
    news = server.run(
        lambda: next(
            c.id for g in server.world.guilds.values() for c in g.channels if c.name == "news"
        )
    )

    async def body(client: discord.Client) -> None:
        with pytest.raises(discord.Forbidden) as forbidden:
            await client.fetch_guild(guild_b)
        assert forbidden.value.code == 50001
        with pytest.raises(discord.NotFound) as unknown:
            await client.fetch_channel(1)
        assert unknown.value.code == 10003
        channel = await client.fetch_channel(news)
        with pytest.raises(discord.Forbidden) as cannot_send:
            await channel.send("hi")
        assert cannot_send.value.code == 50013

    with_client("a", body)


def test_discordpy_waits_out_a_real_429(pointed, rest_client, caplog):
    server = pointed(route_limits={"GET /channels/{channel_id}": (1, 0.5)})
    ids = world_ids(server)
    # Another client of the same bot spends the bucket, so discord.py cannot see it coming.
    assert rest_client(server).get(f"/channels/{ids['text']}").status_code == 200

    async def body(client: discord.Client) -> float:
        started = time.perf_counter()
        channel = await client.fetch_channel(ids["text"])
        assert channel.id == ids["text"]
        return time.perf_counter() - started

    with caplog.at_level(logging.WARNING, logger="discord.http"):
        waited = with_client(TEST_TOKEN, body)
    assert any("responded with 429" in r.getMessage() for r in caplog.records)
    assert 0.05 < waited < 5


def test_discordpy_retries_injected_429_and_500(pointed, rest_client, caplog):
    server = pointed()
    ids = world_ids(server)
    control = rest_client(server)
    control.control(
        "POST", "/faults", {"status": 429, "count": 2, "path": "/channels/*", "retry_after": 0.1}
    )
    control.control("POST", "/faults", {"status": 500, "count": 1, "path": "/guilds/*"})

    async def body(client: discord.Client) -> None:
        channel = await client.fetch_channel(ids["text"])  # 429, 429, then 200
        assert channel.id == ids["text"]
        guild = await client.fetch_guild(ids["guild"])  # 500 (discord.py sleeps 1 s), then 200
        assert guild.id == ids["guild"]

    with caplog.at_level(logging.WARNING, logger="discord.http"):
        with_client(TEST_TOKEN, body)
    assert sum("responded with 429" in r.getMessage() for r in caplog.records) == 2
    assert control.control("GET", "/faults").json() == {"faults": []}


def test_cloudflare_ban_is_not_retried(pointed, rest_client):
    server = pointed(invalid_request_limit=2)
    client = rest_client(server)
    for _ in range(3):
        assert client.get("/users/@me", token="wrong").status_code == 401

    async def main() -> None:
        http_client = discord.Client(intents=discord.Intents.none())
        try:
            with pytest.raises(discord.HTTPException) as banned:
                await http_client.login(TEST_TOKEN)
            assert banned.value.status == 429 and "1015" in banned.value.text
        finally:
            await http_client.close()

    asyncio.run(main())
