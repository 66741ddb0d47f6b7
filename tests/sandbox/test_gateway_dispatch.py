"""World changes (through the control API) reach exactly the sessions entitled to them:
bots in that guild, with the gating intent; message content only with MESSAGE_CONTENT."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from .gateway_support import (
    ALL_INTENTS,
    GUILD_MEMBERS,
    GUILD_MESSAGES,
    GUILDS,
    MESSAGE_CONTENT,
    RawGateway,
    control,
)


@pytest.fixture
def world(tmp_path, sandbox_factory):
    """Guild Alpha has both bots; Beta only ``full-token``.  ``plain-token`` has no privileged intent."""
    scenario = tmp_path / "dispatch.json"
    scenario.write_text(
        json.dumps(
            {
                "bots": [
                    {"token": "full-token"},
                    {"token": "plain-token", "privileged_intents": []},
                ],
                "guilds": [
                    {"name": "Alpha", "members": 6, "channels": 2, "messages": 2},
                    {
                        "name": "Beta",
                        "members": 3,
                        "channels": 1,
                        "messages": 0,
                        "bots": ["full-token"],
                    },
                ],
            }
        )
    )
    server = sandbox_factory(scenario=str(scenario))
    alpha, beta = server.run(lambda: list(server.world.guilds))
    return server, alpha, beta


def _text_channel(server: Any, guild_id: int) -> int:
    return server.run(
        lambda: next(c.id for c in server.world.guild(guild_id).channels if c.type == 0)
    )


def _bot_user_id(server: Any, token: str) -> int:
    return server.run(lambda: server.world.bot_for_token(token).id)


def test_member_events_need_guild_members(world):
    server, alpha, _ = world

    async def body():
        async with (
            RawGateway.connect(server.gateway_url) as members,
            RawGateway.connect(server.gateway_url) as guilds_only,
        ):
            await members.identify("full-token", GUILDS | GUILD_MEMBERS)
            await guilds_only.identify("full-token", GUILDS)
            seq = members.seq

            added = await control(
                members,
                server,
                "POST",
                f"/guilds/{alpha}/members",
                {"username": "newbie", "global_name": "New Bie"},
            )
            user_id = added["user"]["id"]
            await control(
                members, server, "PATCH", f"/guilds/{alpha}/members/{user_id}", {"nick": "Nibs"}
            )
            await control(members, server, "DELETE", f"/guilds/{alpha}/members/{user_id}")

            got = [await members.recv() for _ in range(3)]
            assert [(p["t"], p["s"]) for p in got] == [
                ("GUILD_MEMBER_ADD", seq + 1),
                ("GUILD_MEMBER_UPDATE", seq + 2),
                ("GUILD_MEMBER_REMOVE", seq + 3),
            ]
            assert (
                got[0]["d"]["guild_id"] == str(alpha)
                and got[0]["d"]["user"]["username"] == "newbie"
            )
            assert got[1]["d"]["nick"] == "Nibs"
            assert got[2]["d"] == {"guild_id": str(alpha), "user": got[0]["d"]["user"]}
            assert await guilds_only.sync() == []

    asyncio.run(body())


def test_a_bots_own_member_update_arrives_without_guild_members(world):
    server, alpha, _ = world
    bot_id = _bot_user_id(server, "full-token")

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify("full-token", GUILDS)
            await control(
                gw, server, "PATCH", f"/guilds/{alpha}/members/{bot_id}", {"nick": "Robo"}
            )
            update = await gw.recv()
            assert update["t"] == "GUILD_MEMBER_UPDATE" and update["d"]["nick"] == "Robo"

    asyncio.run(body())


def test_message_events_and_message_content(world):
    server, alpha, _ = world
    channel = _text_channel(server, alpha)
    plain_bot = _bot_user_id(server, "plain-token")

    async def body():
        async with (
            RawGateway.connect(server.gateway_url) as full,
            RawGateway.connect(server.gateway_url) as plain,
            RawGateway.connect(server.gateway_url) as requested_not,
            RawGateway.connect(server.gateway_url) as no_messages,
        ):
            await full.identify("full-token", GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT)
            await plain.identify("plain-token", GUILDS | GUILD_MESSAGES)
            await requested_not.identify(
                "full-token", GUILDS | GUILD_MESSAGES
            )  # granted, not requested
            await no_messages.identify("full-token", GUILDS)

            posted = await control(
                full, server, "POST", f"/channels/{channel}/messages", {"content": "secret plans"}
            )
            await control(
                full,
                server,
                "PATCH",
                f"/channels/{channel}/messages/{posted['id']}",
                {"content": "edited plans"},
            )
            await control(
                full,
                server,
                "POST",
                f"/channels/{channel}/messages",
                {"content": f"hey <@{plain_bot}> look"},
            )
            await control(full, server, "DELETE", f"/channels/{channel}/messages/{posted['id']}")

            names = ["MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_CREATE", "MESSAGE_DELETE"]
            seen = {}
            for label, gw in (("full", full), ("plain", plain), ("requested_not", requested_not)):
                got = [await gw.recv() for _ in names]
                assert [p["t"] for p in got] == names, label
                seen[label] = got
            assert [p["d"]["content"] for p in seen["full"][:3]] == [
                "secret plans",
                "edited plans",
                f"hey <@{plain_bot}> look",
            ]
            # Without MESSAGE_CONTENT the content is empty, except where the bot is mentioned.
            assert [p["d"]["content"] for p in seen["plain"][:3]] == [
                "",
                "",
                f"hey <@{plain_bot}> look",
            ]
            assert [p["d"]["content"] for p in seen["requested_not"][:3]] == ["", "", ""]
            for p in seen["plain"][:2]:
                assert (
                    p["d"]["embeds"] == []
                    and p["d"]["attachments"] == []
                    and p["d"]["components"] == []
                )
                assert p["d"]["id"] and p["d"]["author"]["id"] and p["d"]["guild_id"] == str(alpha)
            assert seen["plain"][3]["d"] == {
                "id": posted["id"],
                "channel_id": str(channel),
                "guild_id": str(alpha),
            }
            assert await no_messages.sync() == []

    asyncio.run(body())


def test_channel_events_need_guilds(world):
    server, alpha, _ = world

    async def body():
        async with (
            RawGateway.connect(server.gateway_url) as gw,
            RawGateway.connect(server.gateway_url) as no_guilds,
        ):
            await gw.identify("full-token", GUILDS)
            await no_guilds.identify("full-token", GUILD_MESSAGES)
            created = await control(
                gw, server, "POST", f"/guilds/{alpha}/channels", {"name": "fresh", "topic": "t"}
            )
            await control(gw, server, "PATCH", f"/channels/{created['id']}", {"name": "fresher"})
            await control(gw, server, "DELETE", f"/channels/{created['id']}")
            got = [await gw.recv() for _ in range(3)]
            assert [p["t"] for p in got] == ["CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE"]
            assert got[0]["d"]["name"] == "fresh" and got[0]["d"]["guild_id"] == str(alpha)
            assert got[1]["d"]["name"] == "fresher" and got[2]["d"]["id"] == created["id"]
            assert await no_guilds.sync() == []

    asyncio.run(body())


def test_events_go_only_to_bots_in_that_guild(world):
    server, _, beta = world

    async def body():
        async with (
            RawGateway.connect(server.gateway_url) as member_bot,
            RawGateway.connect(server.gateway_url) as outsider,
        ):
            await member_bot.identify("full-token", ALL_INTENTS)
            await outsider.identify("plain-token", GUILDS | GUILD_MESSAGES)
            await control(
                member_bot, server, "POST", f"/guilds/{beta}/channels", {"name": "beta-only"}
            )
            assert (await member_bot.recv())["t"] == "CHANNEL_CREATE"
            assert await outsider.sync() == []

    asyncio.run(body())


def test_stats_count_dispatches(world):
    server, alpha, _ = world

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify("full-token", GUILDS)
            before = (await control(gw, server, "GET", "/state"))["gateway"]["dispatched"]
            await control(gw, server, "POST", f"/guilds/{alpha}/channels", {"name": "counted"})
            await gw.recv_dispatch("CHANNEL_CREATE")
            after = (await control(gw, server, "GET", "/state"))["gateway"]["dispatched"]
            assert after == before + 1

    asyncio.run(body())
