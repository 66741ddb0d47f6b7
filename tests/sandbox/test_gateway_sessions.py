"""Gateway sessions over raw sockets: RESUME replay, expiry, invalidation and the
control API's drop / reconnect / invalidate / revoke."""

from __future__ import annotations

import asyncio
from typing import Any

from membersense.sandbox.gateway_session import REPLAY_MAX_FRAMES, RESUME_WINDOW_S
from tests.fakes import FakeClock

from .conftest import TEST_TOKEN
from .gateway_support import ALL_INTENTS, RawGateway, control, poll


def _guild_id(server: Any) -> int:
    return server.run(lambda: next(iter(server.world.guilds)))


async def _resume(
    server: Any, session_id: str, seq: int | None, token: str = TEST_TOKEN
) -> RawGateway:
    """Open a socket and send RESUME; the caller reads the answer and closes it."""
    gw = await RawGateway.connect(server.gateway_url).__aenter__()
    await gw.hello()
    await gw.send({"op": 6, "d": {"token": token, "session_id": session_id, "seq": seq}})
    return gw


async def _expect_resume_refused(server: Any, session_id: str, seq: int | None) -> None:
    """RESUME *session_id* and expect INVALID_SESSION (op 9) instead of a replay."""
    resumed = await _resume(server, session_id, seq)
    try:
        assert (await resumed.recv())["op"] == 9
    finally:
        await resumed.close()


async def _add_member(gw: RawGateway, server: Any, guild_id: int, username: str) -> dict:
    return await control(gw, server, "POST", f"/guilds/{guild_id}/members", {"username": username})


def test_resume_replays_missed_dispatches_in_order(sandbox):
    guild_id = _guild_id(sandbox)

    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            seq = gw.seq
            await gw.ws.close(code=4000)  # not 1000/1001: the session stays resumable
            await _add_member(gw, sandbox, guild_id, "latecomer")
            channel = sandbox.run(lambda: sandbox.world.guild(guild_id).channels[-1].id)
            text = sandbox.run(
                lambda: next(c.id for c in sandbox.world.guild(guild_id).channels if c.type == 0)
            )
            await control(gw, sandbox, "PATCH", f"/channels/{channel}", {"name": "renamed"})
            await control(
                gw,
                sandbox,
                "POST",
                f"/channels/{text}/messages",
                {"content": "while you were away"},
            )

            resumed = await _resume(sandbox, ready["session_id"], seq)
            try:
                got = [await resumed.recv() for _ in range(4)]
                assert [(p["t"], p["s"]) for p in got] == [
                    ("GUILD_MEMBER_ADD", seq + 1),
                    ("CHANNEL_UPDATE", seq + 2),
                    ("MESSAGE_CREATE", seq + 3),
                    ("RESUMED", seq + 4),
                ]
                assert got[0]["d"]["user"]["username"] == "latecomer"
                assert got[2]["d"]["content"] == "while you were away"
                # The session goes on numbering from there.
                await _add_member(resumed, sandbox, guild_id, "afterwards")
                later = await resumed.recv()
                assert (later["t"], later["s"]) == ("GUILD_MEMBER_ADD", seq + 5)
            finally:
                await resumed.close()

    asyncio.run(body())


def test_resume_from_an_earlier_seq_replays_everything_after_it(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await sandbox_drop(gw, sandbox)
            resumed = await _resume(sandbox, ready["session_id"], 1)
            try:
                guild_create = await resumed.recv()
                assert (guild_create["t"], guild_create["s"]) == ("GUILD_CREATE", 2)
                assert (await resumed.recv())["t"] == "RESUMED"
            finally:
                await resumed.close()

    asyncio.run(body())


async def sandbox_drop(gw: RawGateway, server: Any) -> None:
    """Drop every socket through the control API and see ours die without a close frame."""
    answer = await control(gw, server, "POST", "/gateway/drop")
    assert answer["connections"] >= 1
    closed = await gw.expect_close()
    assert closed.code is None  # abnormal closure: no close code


def test_drop_then_resume(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            seq = gw.seq
            await sandbox_drop(gw, sandbox)
            resumed = await _resume(sandbox, ready["session_id"], seq)
            try:
                assert (await resumed.recv())["t"] == "RESUMED"
            finally:
                await resumed.close()
        stats = sandbox.run(lambda: sandbox.state.gateway.stats())
        assert stats["dropped"] == 1 and stats["resumed"] == 1

    asyncio.run(body())


def test_resume_refusals(sandbox_factory, tmp_path):
    import json

    scenario = tmp_path / "two-bots.json"
    scenario.write_text(
        json.dumps(
            {
                "bots": [{"token": TEST_TOKEN}, {"token": "second-token"}],
                "guilds": [{"name": "G", "members": 5, "channels": 1, "messages": 0}],
            }
        )
    )
    server = sandbox_factory(scenario=str(scenario))

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            seq = gw.seq
            await sandbox_drop(gw, server)
            session_id = ready["session_id"]
            cases = [
                ("unknown session", "f" * 32, seq, TEST_TOKEN, {"op": 9}),
                ("another bot's session", session_id, seq, "second-token", {"op": 9}),
                ("bad token", session_id, seq, "nope", 4004),
                ("seq from the future", session_id, seq + 10, TEST_TOKEN, 4007),
            ]
            for what, sid, s, token, expected in cases:
                resumed = await _resume(server, sid, s, token)
                try:
                    if isinstance(expected, int):
                        assert (await resumed.expect_close()).code == expected, what
                    else:
                        assert await resumed.recv() == {
                            "t": None,
                            "s": None,
                            "op": 9,
                            "d": False,
                        }, what
                finally:
                    await resumed.close()
            # 4007 ended the session: even a correct RESUME is refused now.
            await _expect_resume_refused(server, session_id, seq)

    asyncio.run(body())


def test_clean_close_ends_the_session(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            seq = gw.seq
            await gw.ws.close(code=1000)
        await poll(lambda: sandbox.run(lambda: sandbox.state.gateway.stats())["sessions"] == 0)
        await _expect_resume_refused(sandbox, ready["session_id"], seq)

    asyncio.run(body())


def test_sessions_expire_after_the_resume_window(sandbox_factory):
    clock = FakeClock()
    server = sandbox_factory(clock=clock)

    async def body():
        for wait, resumable in ((RESUME_WINDOW_S - 10, True), (RESUME_WINDOW_S + 1, False)):
            async with RawGateway.connect(server.gateway_url) as gw:
                ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
                seq = gw.seq
                await sandbox_drop(gw, server)
            # The server notices the drop on its own loop; wait until the session is detached.
            await poll(
                lambda: server.run(lambda: server.state.gateway.stats())["resumable_sessions"] == 1
            )
            clock.advance(wait)
            resumed = await _resume(server, ready["session_id"], seq)
            try:
                answer = await resumed.recv()
                assert (answer["t"] == "RESUMED") is resumable, (wait, answer)
                if not resumable:
                    assert answer["op"] == 9 and answer["d"] is False
            finally:
                await resumed.close()

    asyncio.run(body())


def test_resume_after_the_replay_buffer_overflowed_is_refused(sandbox):
    guild_id = _guild_id(sandbox)

    def flood() -> None:
        world = sandbox.world
        guild = world.guild(guild_id)
        channel = next(c for c in guild.channels if c.type == 0)
        author = next(m.user for m in guild.members.values() if not m.user.bot)
        for i in range(REPLAY_MAX_FRAMES + 10):
            world.create_message(channel, author, f"flood {i}")

    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            seq = gw.seq
            await sandbox_drop(gw, sandbox)
        sandbox.run(flood)
        await _expect_resume_refused(sandbox, ready["session_id"], seq)

    asyncio.run(body())


def test_resume_moves_a_live_session_to_the_new_socket(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as old:
            ready, _ = await old.identify(TEST_TOKEN, ALL_INTENTS)
            resumed = await _resume(sandbox, ready["session_id"], old.seq)
            try:
                assert (await resumed.recv())["t"] == "RESUMED"
                assert (await old.expect_close()).code is None  # the zombie is cut
            finally:
                await resumed.close()

    asyncio.run(body())


def test_resume_on_an_identified_socket_closes_4005(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await gw.send(
                {
                    "op": 6,
                    "d": {"token": TEST_TOKEN, "session_id": ready["session_id"], "seq": gw.seq},
                }
            )
            assert (await gw.expect_close()).code == 4005

    asyncio.run(body())


def test_control_reconnect_sends_op7_and_the_session_resumes(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            assert (await control(gw, sandbox, "POST", "/gateway/reconnect")) == {"connections": 1}
            assert await gw.recv() == {"t": None, "s": None, "op": 7, "d": None}
            await gw.ws.close(code=4000)
            resumed = await _resume(sandbox, ready["session_id"], gw.seq)
            try:
                assert (await resumed.recv())["t"] == "RESUMED"
            finally:
                await resumed.close()

    asyncio.run(body())


def test_control_invalidate_sends_op9_and_forgets_the_session(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            assert (await control(gw, sandbox, "POST", "/gateway/invalidate")) == {"connections": 1}
            assert await gw.recv() == {"t": None, "s": None, "op": 9, "d": False}
            await _expect_resume_refused(sandbox, ready["session_id"], gw.seq)
            # The invalidated socket may identify again.
            await gw.send(
                {"op": 2, "d": {"token": TEST_TOKEN, "intents": ALL_INTENTS, "properties": {}}}
            )
            assert (await gw.recv_dispatch("READY"))["d"]["session_id"] != ready["session_id"]

    asyncio.run(body())


def test_revoked_token_closes_4004_and_cannot_resume(sandbox):
    async def body():
        async with RawGateway.connect(sandbox.gateway_url) as gw:
            ready, _ = await gw.identify(TEST_TOKEN, ALL_INTENTS)
            await control(gw, sandbox, "POST", f"/tokens/{TEST_TOKEN}/revoke")
            assert (await gw.expect_close()).code == 4004
            resumed = await _resume(sandbox, ready["session_id"], gw.seq)
            try:
                assert (await resumed.expect_close()).code == 4004
            finally:
                await resumed.close()

    asyncio.run(body())


def test_shutdown_closes_sockets_with_1001(sandbox_factory):
    server = sandbox_factory()

    async def body():
        async with RawGateway.connect(server.gateway_url) as gw:
            await gw.identify(TEST_TOKEN, ALL_INTENTS)
            loop = asyncio.get_running_loop()
            stopping = loop.run_in_executor(None, server.stop)
            closed = await gw.expect_close()
            await gw.ws.close()
            await stopping
            assert closed.code == 1001

    asyncio.run(body())
