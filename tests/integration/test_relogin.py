"""Log in, log out, log straight back in, with Discord's real 30 s member-request cooldown:
the login never waits on it, whether the bot's connection lingered or the server restarted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from membersense.sandbox.server import SandboxServer
from tests.integration.conftest import LOGIN_TIMEOUT_S, MemberSense, start_sandbox
from tests.integration.support import MAIN_TOKEN, wait_until

#: Discord's cooldown between two full member requests of one guild by one bot.
DISCORD_COOLDOWN_S = 30.0
#: The bound the issue sets on a re-login.
RELOGIN_S = 1.0


@pytest.fixture
def sandbox(module_tmp: Path) -> Iterator[SandboxServer]:
    # One per test: each starts with no cooldown under way.
    server = start_sandbox(module_tmp, member_request_cooldown_s=DISCORD_COOLDOWN_S)
    yield server
    server.stop()


def timed_login(server: MemberSense) -> tuple[str, float]:
    assert server.api is not None
    started = time.monotonic()
    session = server.api.login(MAIN_TOKEN)
    return session, time.monotonic() - started


def test_relogin_right_after_logout_is_instant_while_the_connection_lingers(
    sandbox: SandboxServer, module_tmp: Path
) -> None:
    server = MemberSense(sandbox, module_tmp / "linger.log", CONNECTION_LINGER="60000").start()
    try:
        assert server.api is not None
        session, first = timed_login(server)
        assert len(server.api.get("/api/members", session).json()) > 1000
        identified = server.control.gateway()["identified"]
        for _ in range(3):
            server.api.logout(session)
            session, elapsed = timed_login(server)
            assert elapsed <= RELOGIN_S, elapsed
            # Members at once: the connection and its published list never went away.
            assert len(server.api.get("/api/members", session).json()) > 1000
        assert server.control.gateway()["identified"] == identified  # no new IDENTIFY
        assert server.control.gateway()["member_requests_rate_limited"] == 0
    finally:
        server.stop()


def test_relogin_after_a_server_restart_answers_at_once_and_members_follow(
    sandbox: SandboxServer, module_tmp: Path
) -> None:
    # A new process has no connection to reuse: its member request falls inside the
    # cooldown the previous process started. (MemberSense would previously wait for it,
    # and answer 504 after LOGIN_TIMEOUT.)
    before = MemberSense(sandbox, module_tmp / "before.log").start()
    try:
        assert before.api is not None
        session, _ = timed_login(before)
        assert len(before.api.get("/api/members", session).json()) > 1000
        before.api.logout(session)
    finally:
        before.stop()

    after = MemberSense(sandbox, module_tmp / "after.log").start()
    try:
        assert after.api is not None
        limited = after.control.gateway()["member_requests_rate_limited"]
        session, elapsed = timed_login(after)
        assert elapsed <= RELOGIN_S, elapsed
        wait_until(
            lambda: after.control.gateway()["member_requests_rate_limited"] > limited,
            what="Discord to refuse the member request",
        )
        loading = after.api.get("/api/members", session)
        assert loading.status_code == 503
        assert loading.json()["error"] == "The member list is still loading; try again shortly"
        assert 1 <= int(loading.headers["Retry-After"]) <= DISCORD_COOLDOWN_S
        # Channels and messages do not wait for members.
        assert after.api.get("/api/channels", session).status_code == 200
        members = wait_until(
            lambda: (
                (r := after.api.get("/api/members", session)).status_code == 200  # type: ignore[union-attr]
                and r.json()
            ),
            timeout=DISCORD_COOLDOWN_S + LOGIN_TIMEOUT_S,
            interval=0.5,
            what="the members after Discord's cooldown",
        )
        assert len(members) > 1000
    finally:
        after.stop()
