"""Every discord.py internal MemberSense relies on (membersense/discord/compat.py) is still
there and still behaves as compat.py assumes; a new discord.py that changes one fails here.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import discord
import pytest
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route
from discord.state import ConnectionState

from membersense.discord import compat
from membersense.discord.connection import INTENTS
from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer

TOKEN = "compat-token"


def test_where_discord_py_connects_is_two_class_attributes() -> None:
    assert isinstance(Route.BASE, str) and "/api/v" in Route.BASE
    assert isinstance(DiscordWebSocket.DEFAULT_GATEWAY, yarl.URL)
    assert hasattr(discord.VoiceClient, "warn_nacl") and hasattr(discord.VoiceClient, "warn_dave")


def test_the_connection_state_collects_parse_methods_as_gateway_parsers() -> None:
    source = inspect.getsource(ConnectionState.__init__)
    assert "self.parsers" in source and "parse_" in source
    for event, discord_parses in compat.RAW_EVENTS.items():
        if discord_parses:
            assert callable(getattr(ConnectionState, f"parse_{event.lower()}")), event
    # The ones MemberSense handles alone: parsed by discord.py (so it would build objects
    # nobody reads), or, for RATE_LIMITED, not parsed at all.
    assert not hasattr(ConnectionState, "parse_rate_limited")


def test_the_client_builds_its_state_through_get_state() -> None:
    assert "_get_state" in inspect.getsource(discord.Client.__init__)
    parameters = inspect.signature(ConnectionState.__init__).parameters
    for name in ("dispatch", "handlers", "hooks", "http"):
        assert name in parameters
    assert "_ready_task" in inspect.getsource(ConnectionState.__init__)


def test_op_8_and_the_rest_api_are_where_compat_looks() -> None:
    parameters = inspect.signature(DiscordWebSocket.request_chunks).parameters
    assert list(parameters)[:3] == ["self", "guild_id", "query"]
    assert {"limit", "nonce"} <= set(parameters)
    assert isinstance(DiscordWebSocket.open, property)
    assert "max_ratelimit_timeout" in inspect.getsource(HTTPClient.__init__)
    assert {"before", "after", "around"} <= set(inspect.signature(HTTPClient.logs_from).parameters)
    assert inspect.iscoroutinefunction(HTTPClient.get_bot_gateway)


def test_messages_go_out_through_request_and_route() -> None:
    route = Route(
        "PATCH", "/channels/{channel_id}/messages/{message_id}", channel_id=5, message_id=6
    )
    assert route.method == "PATCH" and route.url.endswith("/channels/5/messages/6")
    assert list(inspect.signature(HTTPClient.request).parameters)[:2] == ["self", "route"]
    assert "'json' in kwargs" in inspect.getsource(HTTPClient.request)
    assert list(inspect.signature(HTTPClient.delete_message).parameters)[:3] == [
        "self",
        "channel_id",
        "message_id",
    ]


class Recorder:
    """A GatewayListener that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.dispatched: list[str] = []
        self.changed = asyncio.Event()

    def on_gateway(self, event: str, data: Any) -> None:
        self.events.append((event, data))
        self.changed.set()

    def on_dispatch(self, event: str, args: tuple[Any, ...]) -> None:
        self.dispatched.append(event)

    async def wait_for(self, event: str, count: int = 1) -> list[Any]:
        while True:
            found = [data for name, data in self.events if name == event]
            if len(found) >= count:
                return found
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = SandboxServer(
        SandboxConfig(
            port=0,
            members=600,
            channels=2,
            messages=1,
            tokens=(TOKEN,),
            member_request_cooldown_s=30,
        )
    ).start()
    yield server
    server.stop()


def test_a_client_from_make_client_reports_raw_payloads_and_keeps_no_members(
    sandbox: SandboxServer,
) -> None:
    async def scenario() -> None:
        compat.use_endpoints(sandbox.api_url, sandbox.gateway_url)
        recorder = Recorder()
        client = compat.make_client(recorder, intents=INTENTS)
        try:
            await client.login(TOKEN)
            compat.set_rate_limit_ceiling(client, 3)  # below the 30 s discord.py's option allows
            assert client.http.max_ratelimit_timeout == 3
            url, budget = await compat.bot_gateway(client.http)
            assert url == sandbox.gateway_url and budget["remaining"] > 0
            runner = asyncio.create_task(client.connect(reconnect=False))
            [ready] = await recorder.wait_for("READY")
            [created] = await recorder.wait_for("GUILD_CREATE")
            guild_id = int(created["id"])
            assert [int(g["id"]) for g in ready["guilds"]] == [guild_id]
            assert "connect" in recorder.dispatched
            # discord.py holds on_ready back in a task Client.close() leaves running.
            ready_task = compat.cancel_ready_task(client)
            assert isinstance(ready_task, asyncio.Task)
            assert ready_task.get_coro().__qualname__ == "ConnectionState._delay_ready"
            assert ready_task.cancelling() or ready_task.done()
            guild = client.get_guild(guild_id)
            assert guild is not None and guild.me is not None  # the bot's own member is kept
            assert len(guild.members) == 1  # and no one else: the members are ours

            await compat.request_all_members(client, guild_id, "first")
            chunks = await recorder.wait_for("GUILD_MEMBERS_CHUNK", 1)
            while sum(len(c["members"]) for c in chunks) < 601:
                chunks = await recorder.wait_for("GUILD_MEMBERS_CHUNK", len(chunks) + 1)
            assert {c["nonce"] for c in chunks} == {"first"}
            assert len(guild.members) == 1  # discord.py built no member objects

            await compat.request_all_members(client, guild_id, "second")  # within the cooldown
            [limited] = await recorder.wait_for("RATE_LIMITED")
            assert limited["opcode"] == 8 and limited["meta"]["nonce"] == "second"

            history = await compat.message_history(
                client.http, int(guild.text_channels[0].id), 1, before=None, after=None, around=None
            )
            assert len(history) == 1 and "content" in history[0]

            # Our bodies go out as built, through HTTPClient.request and a Route.
            channel_id = int(guild.text_channels[0].id)
            body = {
                "content": "compat",
                "nonce": "compat-1",
                "enforce_nonce": True,
                "allowed_mentions": {"parse": []},
            }
            sent = await compat.send_message(client.http, channel_id, body)
            assert sent["content"] == "compat" and sent["nonce"] == "compat-1"
            assert (await compat.send_message(client.http, channel_id, body))["id"] == sent["id"]
            edited = await compat.edit_message(
                client.http, channel_id, int(sent["id"]), {"content": "edited"}
            )
            assert edited["content"] == "edited" and edited["edited_timestamp"]
            await compat.delete_message(client.http, channel_id, int(sent["id"]))
            with pytest.raises(discord.NotFound) as gone:
                await compat.delete_message(client.http, channel_id, int(sent["id"]))
            assert gone.value.code == 10008  # rest.error_from reads the code
            await client.close()
            await asyncio.wait_for(runner, 5)
            await asyncio.wait([ready_task], timeout=5)
            assert ready_task.done()
        finally:
            if not client.is_closed():
                await client.close()
            compat.release_endpoints()

    asyncio.run(scenario())


def test_a_closed_gateway_refuses_member_requests(sandbox: SandboxServer) -> None:
    async def scenario() -> None:
        client = compat.make_client(Recorder(), intents=INTENTS)
        with pytest.raises(ConnectionError):
            await compat.request_all_members(client, 1, "nonce")
        await client.close()

    asyncio.run(scenario())


def test_endpoints_cannot_move_under_a_live_client() -> None:
    compat.use_endpoints("http://127.0.0.1:1/api/v10", "ws://127.0.0.1:1/ws")
    try:
        with pytest.raises(compat.EndpointConflict):
            compat.use_endpoints("http://127.0.0.1:2/api/v10", "")
        compat.use_endpoints("http://127.0.0.1:1/api/v10", "ws://127.0.0.1:1/ws")  # the same: fine
        compat.release_endpoints()
    finally:
        compat.release_endpoints()
    assert compat.endpoint_users() == 0
