"""Junk logins cannot get the server banned by Discord: under gunicorn, against a
sandbox that bans an IP after too many 401/403/429 answers, as Discord does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from membersense.sandbox.server import SandboxServer
from tests.integration.conftest import MemberSense, start_sandbox
from tests.integration.support import MAIN_TOKEN, SECOND_TOKEN

SANDBOX_LIMIT = 5  # more invalid answers than this to one IP, and the sandbox bans it
BUDGET = 3  # MemberSense's DISCORD_INVALID_REQUEST_LIMIT here: below the sandbox's
WINDOW_S = 600  # Discord's window, which MemberSense counts over


@pytest.fixture(scope="module")
def sandbox(module_tmp: Path) -> Iterator[SandboxServer]:
    server = start_sandbox(
        module_tmp,
        main_members=50,
        invalid_request_limit=SANDBOX_LIMIT,
        invalid_request_ban_s=WINDOW_S,
    )
    yield server
    server.stop()


def test_junk_logins_never_get_the_server_banned(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    server = membersense_factory(DISCORD_INVALID_REQUEST_LIMIT=str(BUDGET), TRUSTED_PROXIES="1")
    api, control = server.api, server.control
    assert api is not None

    def banned() -> bool:
        return bool(control.state()["invalid_request_guard"]["banned"])

    def junk_login(token: str, attacker: int):
        return api.http.post(
            f"{api.base_url}/api/auth/login",
            json={"token": token},
            headers={"X-Forwarded-For": f"203.0.113.{attacker}"},
            timeout=30,
        )

    session = api.login(MAIN_TOKEN)
    channel = next(
        c["id"] for c in api.get("/api/channels", session).json() if c["name"] != "staff-only"
    )
    assert api.get("/api/messages", session, channelId=channel, limit=2).status_code == 200

    # The same junk token from many addresses: Discord is asked once.
    for attacker in range(3 * SANDBOX_LIMIT):
        response = junk_login("junk-token-0", attacker)
        assert response.status_code == 401
        assert response.json() == {"error": "Invalid Discord token"}
    assert not banned()
    api.logout(api.login(SECOND_TOKEN))  # real logins still work

    # Fresh junk tokens: each costs Discord a 401 until MemberSense's budget is spent;
    # then it answers 503 itself, and Discord never gets to ban the server.
    for n in range(1, BUDGET):
        assert junk_login(f"junk-token-{n}", n).status_code == 401
    for n in range(BUDGET, BUDGET + 2 * SANDBOX_LIMIT):
        response = junk_login(f"junk-token-{n}", n)
        assert response.status_code == 503
        # Until the window's oldest refusal leaves it: the whole window, less the seconds
        # this test has run since (a few, on a busy machine).
        assert WINDOW_S - 60 < int(response.headers["Retry-After"]) <= WINDOW_S
        assert response.json()["retryAfter"] == int(response.headers["Retry-After"])
        assert "refused too many requests" in response.json()["error"]
    assert not banned()

    # Until the window slides, reads that need Discord's REST API wait too; the
    # member list and channels come from the gateway's cache and go on.
    messages = api.get("/api/messages", session, channelId=channel, limit=2)
    assert messages.status_code == 503
    assert WINDOW_S - 60 < int(messages.headers["Retry-After"]) <= WINDOW_S
    assert api.get("/api/members", session).status_code == 200
    assert api.get("/api/channels", session).status_code == 200
    api.logout(session)
    assert not banned()
