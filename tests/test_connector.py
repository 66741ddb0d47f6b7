"""BridgeConnector in-process against the sandbox: what a login starts, and that
logout, failed logins and shutdown leave no thread, task or socket behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from membersense.config import load_settings
from membersense.discord import endpoints
from membersense.discord.bot import BotConnection
from membersense.discord.connector import BridgeConnector
from membersense.discord.serializers import member_record
from membersense.errors import (
    BadRequest,
    DiscordTimeout,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer
from tests.integration.support import (
    LONELY_TOKEN,
    MAIN_TOKEN,
    MULTI_TOKEN,
    NO_INTENTS_TOKEN,
    SECOND_TOKEN,
    Control,
    sockets_to,
    wait_until,
    write_scenario,
)

BRIDGE_THREAD = "membersense-discord"
HEARTBEAT_THREAD = "keep-alive-handler"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    scenario = write_scenario(tmp_path_factory.mktemp("connector") / "world.json", 300)
    server = SandboxServer(SandboxConfig(port=0, scenario=scenario,
                                         member_request_cooldown_s=0.5)).start()
    yield server
    server.stop()


@pytest.fixture
def control(sandbox: SandboxServer) -> Iterator[Control]:
    client = Control(sandbox.base_url)
    yield client
    client.request("DELETE", "/faults")
    client.close()


def make_connector(sandbox: SandboxServer, **settings: str) -> BridgeConnector:
    return BridgeConnector(load_settings(environ={}, overrides={
        "DISCORD_API_BASE": sandbox.api_url, "DISCORD_GATEWAY_URL": sandbox.gateway_url,
        "DISCORD_TIMEOUT": "3000", "LOGIN_TIMEOUT": "10000", **settings}))


@pytest.fixture
def connector(sandbox: SandboxServer) -> Iterator[BridgeConnector]:
    made = make_connector(sandbox)
    yield made
    made.close()


def thread_names() -> list[str]:
    return sorted(t.name.split(":")[0] for t in threading.enumerate())


def loop_tasks(connector: BridgeConnector) -> list[str]:
    async def names() -> list[str]:
        current = asyncio.current_task()
        return sorted(f"{t.get_name()} {t.get_coro().__qualname__}" for t in asyncio.all_tasks()
                      if t is not current)

    return connector.bridge.call(names, timeout=5)


def only_bots(connector: BridgeConnector) -> list[BotConnection]:
    return list(connector._bots.values())


def test_login_starts_one_connection_and_logout_leaves_nothing(
        connector: BridgeConnector, sandbox: SandboxServer) -> None:
    threads_before = thread_names()
    service = connector.connect(MAIN_TOKEN)
    assert BRIDGE_THREAD in thread_names()
    assert thread_names().count(HEARTBEAT_THREAD) == 1
    assert sockets_to(os.getpid(), sandbox.port) >= 1
    assert loop_tasks(connector)  # the gateway runs as a task on the loop

    again = connector.connect(MAIN_TOKEN)  # shares the connection
    assert thread_names().count(HEARTBEAT_THREAD) == 1
    [bot] = only_bots(connector)
    assert bot.refs == 2
    service.close()
    service.close()  # idempotent
    assert bot.refs == 1 and not bot.closed
    assert len(again.members(None, limit=3).body) > 2

    again.close()
    assert bot.closed and only_bots(connector) == []
    assert loop_tasks(connector) == []
    wait_until(lambda: sockets_to(os.getpid(), sandbox.port) == 0, what="sockets to close")
    wait_until(lambda: thread_names() == sorted(threads_before + [BRIDGE_THREAD]),
               what="the heartbeat thread to stop")

    connector.close()
    wait_until(lambda: thread_names() == threads_before, what="the bridge thread to stop")


@pytest.mark.parametrize("token, error, message", [
    ("not-a-token", Unauthorized, "Invalid Discord token"),
    (NO_INTENTS_TOKEN, BadRequest, "Server Members Intent and Message Content Intent"),
    (LONELY_TOKEN, BadRequest, "not in any server"),
])
def test_a_failed_login_leaves_nothing_running(connector: BridgeConnector, sandbox: SandboxServer,
                                               token: str, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        connector.connect(token)
    assert message in str(raised.value.description)
    assert only_bots(connector) == []
    assert loop_tasks(connector) == []
    wait_until(lambda: sockets_to(os.getpid(), sandbox.port) == 0, what="sockets to close")
    wait_until(lambda: HEARTBEAT_THREAD not in thread_names(), what="heartbeats to stop")


def test_a_login_slower_than_login_timeout_is_a_504(sandbox: SandboxServer,
                                                     control: Control) -> None:
    connector = make_connector(sandbox, LOGIN_TIMEOUT="1000")
    try:
        control.request("POST", "/faults", delay_ms=3000, count=1, path="/users/@me")
        with pytest.raises(DiscordTimeout):
            connector.connect(MAIN_TOKEN)
        assert only_bots(connector) == [] and loop_tasks(connector) == []
    finally:
        connector.close()


def test_a_member_request_rate_limited_past_the_login_timeout_is_a_503(
        tmp_path: Path) -> None:
    # Discord's own 30 s cooldown between two full member requests of a guild.
    sandbox = SandboxServer(SandboxConfig(port=0, members=20, channels=1, messages=1,
                                          tokens=(MAIN_TOKEN,))).start()
    connector = make_connector(sandbox, LOGIN_TIMEOUT="5000")
    try:
        connector.connect(MAIN_TOKEN).close()
        with pytest.raises(ServiceUnavailable) as raised:
            connector.connect(MAIN_TOKEN)  # a new connection asks for the members again
        # What is left of Discord's 30 s cooldown: more than the login could wait.
        assert 5 < raised.value.extra["retryAfter"] <= 30
        assert raised.value.headers["Retry-After"] == str(raised.value.extra["retryAfter"])
        assert only_bots(connector) == [] and loop_tasks(connector) == []
    finally:
        connector.close()
        sandbox.stop()


def test_the_guild_list_follows_guilds_going_away_and_coming_back(
        connector: BridgeConnector, sandbox: SandboxServer, control: Control) -> None:
    # The sandbox has no guild outages: hand discord.py's gateway the messages Discord
    # sends (GUILD_DELETE, and GUILD_CREATE as the sandbox builds it).
    service = connector.connect(MULTI_TOKEN)
    [bot] = only_bots(connector)
    alpha, beta = control.guild_id("Alpha"), control.guild_id("Beta")
    world = sandbox.world
    beta_create = sandbox.run(lambda: world.guild_create_payload(
        world.guild(int(beta)), world.bot_by_token_any(MULTI_TOKEN), large_threshold=250))

    def listed() -> list[str]:
        return [guild.id for guild in service.guilds()]

    def gateway_sends(event: str, data: dict) -> None:
        async def receive() -> None:
            assert bot._client is not None and bot._client.ws is not None
            await bot._client.ws.received_message(json.dumps({"op": 0, "t": event, "d": data}))
        connector.bridge.call(receive, timeout=5)

    def lists(*guilds: str) -> None:
        # discord.py may hold guild_available back a moment (right after READY).
        wait_until(lambda: listed() == list(guilds), timeout=5, what=f"the guilds {guilds}")

    assert listed() == [alpha, beta]
    gateway_sends("GUILD_DELETE", {"id": beta, "unavailable": True})  # an outage
    lists(alpha)
    gateway_sends("GUILD_CREATE", beta_create)  # available again
    lists(alpha, beta)
    gateway_sends("GUILD_DELETE", {"id": beta})  # the bot was removed
    lists(alpha)
    with pytest.raises(NotFound):
        service.members(int(beta))
    gateway_sends("GUILD_CREATE", {k: v for k, v in beta_create.items() if k != "unavailable"})
    lists(alpha, beta)  # and invited again
    members = wait_until(lambda: _members_or_none(service, int(beta)), what="Beta's members")
    assert len(json.loads(members.body)) == 21


def _members_or_none(service, guild_id: int):
    try:
        return service.members(guild_id)
    except NotFound:
        return None


def test_member_records_read_what_discord_py_exposes(connector: BridgeConnector) -> None:
    connector.connect("multi-bot-token")
    [bot] = only_bots(connector)

    async def compare() -> int:
        checked = 0
        client = bot._client
        assert client is not None
        for guild in client.guilds:
            for member in guild.members:
                record = member_record(member)
                assert record.id == member.id and record.username == member.name
                assert record.global_name == member.global_name and record.nick == member.nick
                assert record.avatar == (member.avatar.key if member.avatar else None)
                assert record.guild_avatar == (member.guild_avatar.key
                                               if member.guild_avatar else None)
                assert set(record.role_ids) == {r.id for r in member.roles if not r.is_default()}
                assert record.joined_at == member.joined_at and record.bot == member.bot
                checked += 1
        return checked

    assert connector.bridge.call(compare, timeout=10) > 300


def test_a_cache_hit_reuses_the_snapshot_until_a_member_changes(
        connector: BridgeConnector, control: Control) -> None:
    service = connector.connect(MAIN_TOKEN)
    first = service.members(None)
    assert service.members(None) is first  # no copy, no loop call
    alpha = control.guild_id("Alpha")
    control.request("POST", f"/guilds/{alpha}/members", username="snapshot_changer")
    changed = wait_until(lambda: (d := service.members(None)) is not first and (d,),
                         what="a new snapshot")[0]
    assert b"snapshot_changer" in changed.body and changed.etag != first.etag


def test_threads_waiting_for_a_failed_rebuild_each_raise_their_own_error(
        connector: BridgeConnector) -> None:
    # Another thread is rebuilding the member list and fails; every waiter raises a
    # copy, never the owner's instance (its traceback would be rewritten by each).
    service = connector.connect(MAIN_TOKEN)
    [bot] = only_bots(connector)
    cache = bot.caches[bot.default_guild_id]
    assert cache.fresh_snapshot() is None
    owners_error = ServiceUnavailable("Discord is rate limiting this bot", retry_after=7)
    pending: Future = Future()
    pending.set_exception(owners_error)
    cache.rebuilding = pending
    try:
        raised = []
        for _ in range(2):
            with pytest.raises(ServiceUnavailable) as caught:
                service.members(None)
            raised.append(caught.value)
    finally:
        cache.rebuilding = None
    assert all(error is not owners_error for error in raised) and raised[0] is not raised[1]
    assert all(error.description == owners_error.description for error in raised)
    assert all(error.headers == {"Retry-After": "7"} for error in raised)
    assert len(service.members(None).body) > 1000  # the next read rebuilds


def test_a_close_cancelled_midway_is_finished_by_the_next_close(
        connector: BridgeConnector, sandbox: SandboxServer) -> None:
    # The connector bounds each release; a close cut short there must not leave the
    # gateway running with every later close() returning at once.
    service = connector.connect(MAIN_TOKEN)
    [bot] = only_bots(connector)

    async def cancel_then_close_again() -> bool:
        first = asyncio.create_task(bot.close())
        await asyncio.sleep(0)  # it begins: marks the bot closed, starts closing the client
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        assert bot.closed
        await bot.close()
        assert bot._runner is not None
        return bot._runner.done()

    assert connector.bridge.call(cancel_then_close_again, timeout=10)
    assert endpoints._users == 0
    service.close()
    assert loop_tasks(connector) == []
    wait_until(lambda: sockets_to(os.getpid(), sandbox.port) == 0, what="sockets to close")


def test_closing_during_the_login_cancels_it(connector: BridgeConnector, control: Control,
                                             sandbox: SandboxServer) -> None:
    control.request("POST", "/faults", delay_ms=3000, count=1, path="/users/@me")
    controls = sockets_to(os.getpid(), sandbox.port)  # the control client's keep-alive
    bot = BotConnection(MAIN_TOKEN, connector.settings, connector.invalid_requests)

    async def close_while_logging_in() -> tuple[bool, bool]:
        login = asyncio.create_task(bot.ensure_started())
        while bot._start_task is None or bot._client is None:
            await asyncio.sleep(0.01)  # the login is waiting for GET /users/@me
        await bot.close()
        done = await asyncio.wait_for(asyncio.wait([login], timeout=1), 2)
        with contextlib.suppress(BaseException):
            login.result()
        assert bot._start_task is not None
        return bot._start_task.cancelled(), bool(done[0])

    # Without the cancel, the login would go on (after the delayed answer) to open a
    # gateway for a connection already closed.
    assert connector.bridge.call(close_while_logging_in, timeout=10) == (True, True)
    assert loop_tasks(connector) == []
    assert endpoints._users == 0
    wait_until(lambda: sockets_to(os.getpid(), sandbox.port) == controls, what="sockets to close")


def test_a_revoked_token_fails_its_sessions_for_good(connector: BridgeConnector,
                                                     control: Control) -> None:
    service = connector.connect(SECOND_TOKEN)  # no other test here uses this bot
    assert not service.failed
    control.request("POST", f"/tokens/{SECOND_TOKEN}/revoke")
    wait_until(lambda: service.failed, what="the connection to fail")
    with pytest.raises(Unauthorized):
        service.members(None)
    with pytest.raises(Unauthorized):
        connector.connect(SECOND_TOKEN)
    service.close()
    assert only_bots(connector) == [] and loop_tasks(connector) == []


def test_closing_the_connector_closes_live_sessions(sandbox: SandboxServer) -> None:
    threads_before = thread_names()
    connector = make_connector(sandbox)
    service = connector.connect(MAIN_TOKEN)
    assert not service.failed
    connector.close()
    connector.close()
    assert service.failed  # its sessions end at their next request
    assert thread_names() == threads_before
    wait_until(lambda: sockets_to(os.getpid(), sandbox.port) == 0, what="sockets to close")
    with pytest.raises(ServiceUnavailable):
        service.members(None)
    service.close()  # after shutdown: harmless
    with pytest.raises(ServiceUnavailable):
        connector.connect(MAIN_TOKEN)


def test_no_repr_shows_the_token(connector: BridgeConnector) -> None:
    service = connector.connect(MAIN_TOKEN)
    [bot] = only_bots(connector)
    for thing in (connector, service, bot, bot.caches):
        assert MAIN_TOKEN not in repr(thing)


def test_settings_reach_discord_py(connector: BridgeConnector, sandbox: SandboxServer) -> None:
    import discord.gateway
    import discord.http

    connector.connect(MAIN_TOKEN)
    assert discord.http.Route.BASE == sandbox.api_url
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == sandbox.gateway_url


def test_nothing_starts_before_the_first_login(sandbox: SandboxServer) -> None:
    threads_before = thread_names()
    connector = make_connector(sandbox)
    assert thread_names() == threads_before
    connector.close()
    assert thread_names() == threads_before
