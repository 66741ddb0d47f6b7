"""The discord.py service in-process against the sandbox: what a login starts, what
logout, failed logins and shutdown leave behind (no thread, task or socket), the
linger, reads from published state, and a revoked token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator

import pytest

from membersense.discord import compat
from membersense.discord.connection import BotConnection, State
from membersense.discord.errors import (
    BotReleased,
    DiscordTimeout,
    GuildNotFound,
    InvalidToken,
    MissingIntents,
    NoGuilds,
    ServiceClosed,
)
from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer
from membersense.sessions import LoginRefused
from tests.inprocess import Bots, thread_names
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
    scenario = write_scenario(tmp_path_factory.mktemp("local") / "world.json", 300)
    server = SandboxServer(
        SandboxConfig(port=0, scenario=scenario, member_request_cooldown_s=0.5)
    ).start()
    yield server
    server.stop()


@pytest.fixture
def control(sandbox: SandboxServer) -> Iterator[Control]:
    client = Control(sandbox.base_url)
    yield client
    client.request("DELETE", "/faults")
    client.close()


@pytest.fixture
def bots(sandbox: SandboxServer) -> Iterator[Bots]:
    made = Bots(sandbox)
    yield made
    made.close()


def sandbox_sockets(sandbox: SandboxServer) -> int:
    return sockets_to(os.getpid(), sandbox.port)


def test_login_starts_one_connection_and_the_last_logout_leaves_nothing(
    bots: Bots, sandbox: SandboxServer, control: Control
) -> None:
    threads_before = thread_names()
    first = bots.login(MAIN_TOKEN)
    assert BRIDGE_THREAD in thread_names()
    assert thread_names().count(HEARTBEAT_THREAD) == 1
    assert sandbox_sockets(sandbox) >= 1
    assert bots.loop_tasks()  # the gateway runs as a task on the loop

    second = bots.login(MAIN_TOKEN)  # shares the connection
    assert thread_names().count(HEARTBEAT_THREAD) == 1
    assert len(bots.discord.pool) == 1
    assert first.logout() and not first.logout()
    assert bots.connection(MAIN_TOKEN).state is State.READY
    assert len(second.members(limit=3).plain()) > 2

    second.logout()  # CONNECTION_LINGER is 0 here
    wait_until(lambda: len(bots.discord.pool) == 0, what="the connection to close")
    wait_until(lambda: bots.loop_tasks() == [], what="the connection's tasks to end")
    wait_until(lambda: sandbox_sockets(sandbox) == 0, what="sockets to close")
    # Closed with 1000, not discord.py's resumable 4000: Discord ends the session (and shows
    # the bot offline) rather than keeping it for a resume that never comes.
    gateway = control.gateway()
    assert (gateway["sessions"], gateway["resumable_sessions"]) == (0, 0)
    wait_until(
        lambda: (
            thread_names()
            == sorted(
                threads_before
                + [BRIDGE_THREAD, "membersense-snapshots_0", "membersense-session-sweeper"]
            )
        ),
        what="the heartbeat thread to stop",
    )
    bots.close()
    wait_until(lambda: thread_names() == threads_before, what="every thread to stop")


@pytest.mark.parametrize(
    "token, error, message",
    [
        ("not-a-token", InvalidToken, "Invalid Discord token"),
        (NO_INTENTS_TOKEN, MissingIntents, "Server Members Intent and Message Content Intent"),
        (LONELY_TOKEN, NoGuilds, "not in any server"),
    ],
)
def test_a_failed_login_leaves_nothing_running(
    bots: Bots, sandbox: SandboxServer, token: str, error: type, message: str
) -> None:
    with pytest.raises(error) as raised:
        bots.login(token)
    assert message in raised.value.message
    assert len(bots.discord.pool) == 0 and bots.runtime.store.count() == 0
    assert bots.loop_tasks() == []
    wait_until(lambda: sandbox_sockets(sandbox) == 0, what="sockets to close")
    wait_until(lambda: HEARTBEAT_THREAD not in thread_names(), what="heartbeats to stop")


def test_a_login_slower_than_login_timeout_is_a_timeout(
    sandbox: SandboxServer, control: Control
) -> None:
    bots = Bots(sandbox, LOGIN_TIMEOUT="1000")
    try:
        control.request("POST", "/faults", delay_ms=3000, count=1, path="/users/@me")
        with pytest.raises(DiscordTimeout) as raised:
            bots.login(MAIN_TOKEN)
        assert raised.value.message == "Discord did not finish the login in time"
        wait_until(
            lambda: len(bots.discord.pool) == 0 and bots.loop_tasks() == [],
            what="the login to be cleaned up",
        )
    finally:
        bots.close()


def test_within_discords_member_cooldown_a_login_answers_at_once_and_members_follow(
    tmp_path,
) -> None:
    # Discord's own 30 s cooldown between two full member requests of a guild; a new
    # connection (another process, or this one after the linger) asks again.
    sandbox = SandboxServer(
        SandboxConfig(
            port=0,
            members=300,
            channels=1,
            messages=1,
            tokens=(MAIN_TOKEN,),
            member_request_cooldown_s=3,
        )
    ).start()
    first, second = Bots(sandbox), Bots(sandbox, DISCORD_TIMEOUT="500")
    try:
        first.login(MAIN_TOKEN).members()  # uses the guild's member request
        started = time.monotonic()
        session = second.login(MAIN_TOKEN)  # Discord answers RATE_LIMITED
        assert time.monotonic() - started < 1.0
        # While loading, a members read waits (DISCORD_TIMEOUT), then says when to retry.
        with pytest.raises(Exception) as loading:
            session.members()
        assert type(loading.value).__name__ == "MembersLoading"
        assert 1 <= loading.value.retry_after <= 3  # type: ignore[attr-defined]
        members = wait_until(
            lambda: _members_or_none(session),
            timeout=10,
            what="the members to arrive after the cooldown",
        )
        assert len(json.loads(members.plain())) == 301
    finally:
        first.close()
        second.close()
        sandbox.stop()


def _members_or_none(session):
    try:
        return session.members()
    except Exception as exc:
        if type(exc).__name__ in ("MembersLoading", "GuildNotFound"):
            return None
        raise


def test_a_quick_relogin_finds_the_lingering_connection(
    sandbox: SandboxServer, control: Control
) -> None:
    bots = Bots(sandbox, CONNECTION_LINGER="60000")
    try:
        session = bots.login(SECOND_TOKEN)
        document = session.members()
        connection = bots.connection(SECOND_TOKEN)
        identified = control.gateway()["identified"]
        session.logout()
        assert bots.runtime.store.count() == 0
        started = time.monotonic()
        again = bots.login(SECOND_TOKEN)
        assert time.monotonic() - started < 0.5
        assert bots.connection(SECOND_TOKEN) is connection  # no new IDENTIFY
        assert control.gateway()["identified"] == identified
        assert again.members() is document  # the published snapshot, as it was
    finally:
        bots.close()


def test_the_guild_list_follows_guilds_going_away_and_coming_back(
    bots: Bots, sandbox: SandboxServer, control: Control
) -> None:
    # The sandbox has no guild outages: hand discord.py's gateway the messages Discord
    # sends (GUILD_DELETE, and GUILD_CREATE as the sandbox builds it).
    session = bots.login(MULTI_TOKEN)
    connection = bots.connection(MULTI_TOKEN)
    alpha, beta = control.guild_id("Alpha"), control.guild_id("Beta")
    world = sandbox.world
    beta_create = sandbox.run(
        lambda: world.guild_create_payload(
            world.guild(int(beta)), world.bot_by_token_any(MULTI_TOKEN), large_threshold=250
        )
    )

    def listed() -> list[str]:
        return [guild.id for guild in bots.discord.guilds(session.bot)]

    def gateway_sends(event: str, data: dict) -> None:
        async def receive() -> None:
            ws = connection._client.ws  # type: ignore[union-attr]
            await ws.received_message(json.dumps({"op": 0, "t": event, "d": data}))

        bots.on_loop(receive)

    def lists(*guilds: str) -> None:
        wait_until(lambda: listed() == list(guilds), timeout=5, what=f"the guilds {guilds}")

    assert listed() == [alpha, beta]
    gateway_sends("GUILD_DELETE", {"id": beta, "unavailable": True})  # an outage
    lists(alpha)
    gateway_sends("GUILD_CREATE", beta_create)  # available again
    lists(alpha, beta)
    gateway_sends("GUILD_DELETE", {"id": beta})  # the bot was removed
    lists(alpha)
    with pytest.raises(GuildNotFound):
        session.members(beta)
    gateway_sends("GUILD_CREATE", {k: v for k, v in beta_create.items() if k != "unavailable"})
    lists(alpha, beta)  # and invited again
    members = wait_until(lambda: _members_or_none_in(session, beta), what="Beta's members")
    assert len(json.loads(members.plain())) == 21


def _members_or_none_in(session, guild: str):
    try:
        return session.members(guild)
    except GuildNotFound:
        return None


def test_member_records_match_the_sandboxs_world(
    bots: Bots, sandbox: SandboxServer, control: Control
) -> None:
    session = bots.login(MULTI_TOKEN)
    for guild_id in session.record.guild_ids:
        ours = {m["id"]: m for m in json.loads(session.members(guild_id).plain())}

        def world_members(gid: int = int(guild_id)) -> dict[str, dict]:
            world = sandbox.world
            guild = world.guild(gid)
            return {
                str(uid): world.member_payload(guild, member)
                for uid, member in guild.members.items()
            }

        theirs = sandbox.run(world_members)
        assert set(ours) == set(theirs)
        for user_id, payload in theirs.items():
            member, user = ours[user_id], payload["user"]
            assert member["username"] == user["username"]
            assert member["displayName"] == (
                payload.get("nick") or user.get("global_name") or user["username"]
            )
            assert member["bot"] == bool(user.get("bot"))
            assert len(member["roles"]) == len(set(payload["roles"]) - {guild_id}) + 1


def test_the_snapshot_is_reused_until_a_member_changes_then_rebuilt_off_the_request_path(
    bots: Bots, control: Control
) -> None:
    session = bots.login(MAIN_TOKEN)
    first = session.members()
    assert session.members() is first  # no copy, no loop call
    alpha = control.guild_id("Alpha")
    control.request("POST", f"/guilds/{alpha}/members", username="snapshot_changer")
    changed = wait_until(
        lambda: (d := session.members()) is not first and (d,), what="a new snapshot"
    )[0]
    assert b"snapshot_changer" in changed.plain() and changed.etag != first.etag
    summary = bots.discord.guilds(session.bot)[0]
    assert summary.member_count == len(json.loads(changed.plain()))


def test_a_close_cancelled_midway_is_finished_by_the_next_close(
    bots: Bots, sandbox: SandboxServer
) -> None:
    # Releases are bounded; a close cut short must not leave the gateway running with
    # every later close() returning at once.
    bots.login(MAIN_TOKEN)
    connection = bots.connection(MAIN_TOKEN)

    async def cancel_then_close_again() -> bool:
        first = asyncio.create_task(connection.close("test"))
        await asyncio.sleep(0)  # it begins: marks the connection closing
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        assert connection.lifecycle.ending
        await connection.close("test")
        return (
            connection.state is State.CLOSED
            and connection._runner is not None
            and connection._runner.done()
        )

    assert bots.on_loop(cancel_then_close_again)
    assert compat.endpoint_users() == 0
    wait_until(lambda: sandbox_sockets(sandbox) == 0, what="sockets to close")


def test_closing_during_the_login_cancels_it(
    bots: Bots, control: Control, sandbox: SandboxServer
) -> None:
    control.request("POST", "/faults", delay_ms=3000, count=1, path="/users/@me")
    controls = sandbox_sockets(sandbox)  # the control client's keep-alive
    bots.discord.bridge.call(asyncio.sleep, 0, timeout=5)  # start the loop
    connection = BotConnection(
        MAIN_TOKEN,
        bots.settings,
        bus=bots.runtime.bus,
        builder=bots.discord._snapshot_builder(),
        on_response=lambda status, scope: None,
    )

    async def close_while_logging_in() -> tuple[bool, bool]:
        login = asyncio.create_task(connection.login(5))
        while connection._start_task is None or connection._client is None:
            await asyncio.sleep(0.01)  # the login is waiting for GET /users/@me
        await connection.close("test")
        done = await asyncio.wait_for(asyncio.wait([login], timeout=1), 2)
        with contextlib.suppress(BaseException):
            login.result()
        assert connection._start_task is not None
        return connection._start_task.cancelled(), bool(done[0])

    # Without the cancel, the login would go on (after the delayed answer) to open a
    # gateway for a connection already closed.
    assert bots.on_loop(close_while_logging_in) == (True, True)
    assert bots.loop_tasks() == []
    assert compat.endpoint_users() == 0
    wait_until(lambda: sandbox_sockets(sandbox) == controls, what="sockets to close")


def test_a_revoked_token_ends_its_sessions_and_later_logins_are_refused(
    bots: Bots, control: Control, sandbox: SandboxServer
) -> None:
    session = bots.login(SECOND_TOKEN)
    assert session.alive()
    control.request("POST", f"/tokens/{SECOND_TOKEN}/revoke")
    wait_until(
        lambda: bots.connection(SECOND_TOKEN).state is State.FAILED, what="the connection to fail"
    )
    with pytest.raises(InvalidToken):
        session.members()
    assert not session.alive()  # the session itself ended
    wait_until(lambda: len(bots.discord.pool) == 0, what="the failed connection to close")
    with pytest.raises(InvalidToken):
        bots.login(SECOND_TOKEN)
    assert bots.loop_tasks() == []


def test_a_read_racing_the_last_logout_is_unauthorized_not_an_error(
    bots: Bots, control: Control
) -> None:
    session = bots.login(MAIN_TOKEN)
    channel = next(c["id"] for c in session.channels() if c["name"] != "staff-only")
    connection = bots.connection(MAIN_TOKEN)
    session.logout()
    wait_until(lambda: connection.lifecycle.ending, what="the connection to close")
    with pytest.raises(BotReleased) as raised:
        session.messages(channel, limit=2)
    assert raised.value.message == "Unauthorized"


def test_closing_the_runtime_ends_sessions_and_refuses_new_logins(sandbox: SandboxServer) -> None:
    threads_before = thread_names()
    bots = Bots(sandbox)
    session = bots.login(MAIN_TOKEN)
    bots.close()
    bots.close()
    assert not session.alive()
    assert thread_names() == threads_before
    wait_until(lambda: sandbox_sockets(sandbox) == 0, what="sockets to close")
    with pytest.raises(ServiceClosed):
        session.members()
    with pytest.raises(LoginRefused):
        bots.login(MAIN_TOKEN)


def test_no_repr_shows_the_token(bots: Bots) -> None:
    session = bots.login(MAIN_TOKEN)
    connection = bots.connection(MAIN_TOKEN)
    for thing in (
        bots.discord,
        bots.discord.pool,
        connection,
        connection.lifecycle,
        connection.loader.guilds,
        session.record,
        bots.runtime,
    ):
        assert MAIN_TOKEN not in repr(thing)


def test_settings_reach_discord_py(bots: Bots, sandbox: SandboxServer) -> None:
    import discord.gateway
    import discord.http

    bots.login(MAIN_TOKEN)
    assert discord.http.Route.BASE == sandbox.api_url
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == sandbox.gateway_url


def test_nothing_starts_before_the_first_login(sandbox: SandboxServer) -> None:
    threads_before = thread_names()
    bots = Bots(sandbox)
    assert thread_names() == threads_before
    bots.close()
    assert thread_names() == threads_before


@pytest.fixture(autouse=True)
def _every_client_gives_the_endpoints_back() -> Iterator[None]:
    yield
    wait_until(
        lambda: compat.endpoint_users() == 0, timeout=5, what="every discord.py client to be gone"
    )
