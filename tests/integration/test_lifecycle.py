"""Connections over time: sharing, logout, expiry, gateway drops, Discord faults, shutdown."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import (
    DISCORD_TIMEOUT_S,
    LOGIN_TIMEOUT_S,
    MEMBER_REQUEST_COOLDOWN_S,
    MemberSense,
    start_sandbox,
)
from tests.integration.support import (
    MAIN_TOKEN,
    MULTI_TOKEN,
    SECOND_TOKEN,
    Api,
    Control,
    sockets_to,
    wait_until,
)

#: Cloud Run sends SIGKILL this long after SIGTERM.
CLOUD_RUN_GRACE_S = 10.0


def test_one_gateway_connection_per_token_closed_by_the_last_logout(
    app_server: MemberSense, api: Api, control: Control
) -> None:
    # Sockets are counted here; threads and tasks, which gunicorn's growing request
    # pool makes hard to count from outside, in test_local_discord (in-process).
    worker, port = app_server.worker, app_server.sandbox.port
    assert sockets_to(worker, port) == 0
    identified = control.gateway()["identified"]

    first = api.login(MAIN_TOKEN)
    second = api.login(MAIN_TOKEN)
    assert control.connections_of("Main Bot") == 1
    assert control.gateway()["identified"] == identified + 1
    assert sockets_to(worker, port) >= 1  # the gateway's websocket

    api.logout(first)
    assert api.get("/api/members", second, limit=1).status_code == 200
    assert control.connections_of("Main Bot") == 1
    assert api.get("/api/members", first, limit=1).status_code == 401

    api.logout(second)
    wait_until(lambda: control.connections_of("Main Bot") == 0, what="the gateway to close")
    wait_until(lambda: sockets_to(worker, port) == 0, what="sockets to the sandbox to close")


def test_a_new_connection_within_the_member_request_cooldown_logs_in_at_once(
    api: Api, control: Control
) -> None:
    api.logout(api.login(MAIN_TOKEN))
    wait_until(lambda: control.connections_of("Main Bot") == 0, what="the gateway to close")
    limited = control.gateway()["member_requests_rate_limited"]
    started = time.monotonic()
    session = api.login(MAIN_TOKEN)  # Discord answers its member request with RATE_LIMITED
    elapsed = time.monotonic() - started
    try:
        wait_until(
            lambda: control.gateway()["member_requests_rate_limited"] == limited + 1,
            what="the member request to be rate limited",
        )
        # Answered as soon as the guilds were known: neither the cooldown (2 s) nor the
        # login's own timeout (15 s) was waited for.
        assert elapsed < MEMBER_REQUEST_COOLDOWN_S
        first = api.get("/api/members", session)
        if first.status_code == 503:  # still loading: it says when to come back
            assert first.json()["error"] == "The member list is still loading; try again shortly"
            assert 1 <= int(first.headers["Retry-After"]) <= MEMBER_REQUEST_COOLDOWN_S + 1
        members = wait_until(
            lambda: (r := api.get("/api/members", session)).status_code == 200 and r.json(),
            timeout=LOGIN_TIMEOUT_S,
            what="the members",
        )
        assert len(members) > 1000
    finally:
        api.logout(session)


def test_reads_survive_a_gateway_drop_and_the_session_resumes(api: Api, control: Control) -> None:
    session = api.login(MAIN_TOKEN)
    before = api.get("/api/members", session)
    resumed = control.gateway()["resumed"]
    control.request("POST", "/gateway/drop")
    during = api.get("/api/members", session)
    assert during.status_code == 200 and during.content == before.content
    wait_until(lambda: control.gateway()["resumed"] == resumed + 1, what="RESUMED")
    alpha = control.guild_id("Alpha")
    added = control.request("POST", f"/guilds/{alpha}/members", username="after_the_drop")
    wait_until(
        lambda: added["user"]["id"] in {m["id"] for m in api.get("/api/members", session).json()},
        what="a member added after the resume to show",
    )
    api.logout(session)


def test_reads_survive_an_invalidated_session(api: Api, control: Control) -> None:
    session = api.login(MAIN_TOKEN)
    before = api.get("/api/members", session).json()
    identified = control.gateway()["identified"]
    control.request("POST", "/gateway/invalidate")
    # discord.py identifies again and drops its cache; MemberSense serves the last list
    # until the members are loaded again.
    assert api.get("/api/members", session).json() == before
    wait_until(lambda: control.gateway()["identified"] == identified + 1, what="a new IDENTIFY")
    # discord.py waits up to 5 s before identifying again, as long as the server keeps an idle
    # connection: a fresh one, rather than a race with the server closing the one kept.
    api.http.close()
    alpha = control.guild_id("Alpha")
    added = control.request("POST", f"/guilds/{alpha}/members", username="after_invalidate")
    wait_until(
        lambda: len(api.get("/api/members", session).json()) == len(before) + 1,
        timeout=15,
        what="the member list to be reloaded with the newcomer",
    )
    assert added["user"]["id"] in {m["id"] for m in api.get("/api/members", session).json()}
    api.logout(session)


@pytest.fixture
def channel_session(api: Api) -> tuple[str, str]:
    session = api.login(MAIN_TOKEN)
    channel = next(
        c["id"] for c in api.get("/api/channels", session).json() if c["name"] != "staff-only"
    )
    return session, channel


def test_discord_5xx_is_a_502(api: Api, control: Control, channel_session) -> None:
    session, channel = channel_session
    control.request("POST", "/faults", status=503, count=50, path="/channels/*/messages")
    response = api.get("/api/messages", session, channelId=channel, limit=5)
    assert response.status_code == 502
    assert response.json() == {"error": "Discord is unavailable"}
    # A persistent 500 is retried by discord.py until the request's time is up.
    control.request("POST", "/faults", status=500, count=50, path="/channels/*/messages")
    started = time.monotonic()
    response = api.get("/api/messages", session, channelId=channel, limit=5)
    assert response.status_code == 502
    # Given up at DISCORD_TIMEOUT, not after discord.py's retries (about 16 s).
    assert time.monotonic() - started < 2 * DISCORD_TIMEOUT_S
    control.request("DELETE", "/faults")
    # One 500 is retried and succeeds.
    control.request("POST", "/faults", status=500, count=1, path="/channels/*/messages")
    assert api.get("/api/messages", session, channelId=channel, limit=5).status_code == 200


def test_a_long_discord_rate_limit_is_a_503_with_retry_after(
    api: Api, control: Control, channel_session
) -> None:
    session, channel = channel_session
    control.request(
        "POST", "/faults", status=429, count=1, retry_after=60, path="/channels/*/messages"
    )
    started = time.monotonic()
    response = api.get("/api/messages", session, channelId=channel, limit=5)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 59
    assert response.json()["retryAfter"] >= 59
    # Not slept on, not even until DISCORD_TIMEOUT (which would answer 503 too).
    assert time.monotonic() - started < DISCORD_TIMEOUT_S - 0.5
    # A short one is waited out.
    control.request("DELETE", "/faults")
    control.request(
        "POST", "/faults", status=429, count=1, retry_after=0.3, path="/channels/*/messages"
    )
    assert api.get("/api/messages", session, channelId=channel, limit=5).status_code == 200


def test_a_discord_slower_than_the_timeout_is_a_504(
    api: Api, control: Control, channel_session
) -> None:
    session, channel = channel_session
    delay_s = 4 * DISCORD_TIMEOUT_S
    control.request(
        "POST", "/faults", delay_ms=int(delay_s * 1000), count=1, path="/channels/*/messages"
    )
    started = time.monotonic()
    response = api.get("/api/messages", session, channelId=channel, limit=5)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json() == {"error": "Discord did not respond in time"}
    # Answered at DISCORD_TIMEOUT (the bridge's own bound adds 1 s), long before Discord.
    assert 0.9 * DISCORD_TIMEOUT_S < elapsed < delay_s / 2
    # The session is fine afterwards, and cached reads never waited on Discord.
    assert api.get("/api/members", session, limit=2).status_code == 200


def test_a_revoked_token_ends_its_sessions(
    app_server: MemberSense, api: Api, control: Control
) -> None:
    session = api.login(SECOND_TOKEN)
    assert api.get("/api/members", session, limit=1).status_code == 200
    control.request("POST", f"/tokens/{SECOND_TOKEN}/revoke")
    # The session ends with its bot's connection: its next request is a 401 and
    # it no longer holds a MAX_CONCURRENT_USERS slot.
    wait_until(
        lambda: api.get("/api/members", session, limit=1).status_code == 401,
        what="reads to be refused",
    )
    response = api.get("/api/channels", session)
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}
    assert api.logout(session).status_code == 401  # already gone
    again = api.post_login(SECOND_TOKEN)
    assert again.status_code == 401
    assert again.json() == {"error": "Invalid Discord token"}
    wait_until(lambda: control.connections_of("Second Bot") == 0, what="the gateway to close")


def test_logins_past_max_concurrent_users_are_a_503_until_one_logs_out(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    server = membersense_factory(MAX_CONCURRENT_USERS="1")
    api = server.api
    assert api is not None
    session = api.login(MAIN_TOKEN)
    refused = api.post_login(MAIN_TOKEN)
    assert refused.status_code == 503
    assert refused.json() == {
        "error": "Maximum number of concurrent users reached",
        "retryAfter": 60,
    }
    assert api.get("/api/members", session, limit=1).status_code == 200
    assert api.logout(session).status_code == 200
    api.logout(api.login(MAIN_TOKEN))  # the slot is free again


def test_idle_sessions_expire_and_close_their_connection(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    server = membersense_factory(SESSION_TIMEOUT="1000", CLEANUP_INTERVAL="200")
    api, control = server.api, server.control
    assert api is not None
    session = api.login(MAIN_TOKEN)
    assert control.gateway()["connections_by_bot"]  # connected
    worker = server.worker
    assert sockets_to(worker, server.sandbox.port) >= 1
    wait_until(
        lambda: sockets_to(worker, server.sandbox.port) == 0,
        timeout=10,
        what="the idle session's connection to close",
    )
    assert api.get("/api/members", session).status_code == 401
    assert "expired idle sessions" in server.server.log()


def test_sigterm_closes_sessions_and_connections(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    server = membersense_factory()
    api, control = server.api, server.control
    assert api is not None
    api.login(MAIN_TOKEN)
    assert control.connections_of("Main Bot") >= 1
    started = time.monotonic()
    assert server.server.stop() == 0
    assert time.monotonic() - started < CLOUD_RUN_GRACE_S  # before Cloud Run's SIGKILL
    log = server.server.log()
    assert "closed sessions at shutdown" in log
    assert "closed bot connections" in log or "session closed" in log
    wait_until(lambda: control.connections_of("Main Bot") == 0, what="the gateway to close")


def test_without_a_gateway_url_the_one_discord_names_is_used(
    membersense_factory: Callable[..., MemberSense], control: Control
) -> None:
    # DISCORD_API_BASE alone points MemberSense at another Discord: the gateway
    # comes from its GET /gateway/bot, never discord.py's built-in wss://gateway.discord.gg.
    server = membersense_factory(DISCORD_GATEWAY_URL="")
    assert server.api is not None
    session = server.api.login(MULTI_TOKEN)  # a bot no other test here revokes or keeps
    try:
        assert control.connections_of("Multi Bot") == 1
        assert server.api.get("/api/members", session, limit=5).status_code == 200
    finally:
        server.api.logout(session)


def test_a_reconnect_discord_refuses_for_a_while_is_a_warning_not_an_error(tmp_path) -> None:
    # The sandbox goes away under a logged-in bot (as `make demo`'s Ctrl-C does to it):
    # discord.py logs each failed reconnect with log.exception, at ERROR.
    sandbox = start_sandbox(tmp_path, main_members=20)
    server = MemberSense(sandbox, tmp_path / "gunicorn.log").start()
    try:
        assert server.api is not None
        session = server.api.login(MAIN_TOKEN)
        sandbox.stop()

        def entries() -> list[dict]:
            return [
                json.loads(line)
                for line in server.server.log().splitlines()
                if line.startswith("{")
            ]

        wait_until(
            lambda: any(e["message"].startswith("Attempting a reconnect") for e in entries()),
            timeout=30,
            what="discord.py to retry the gateway",
        )
        server.api.logout(session)
    finally:
        server.stop()
        sandbox.stop()
    reconnects = [e for e in entries() if e["message"].startswith("Attempting a reconnect")]
    assert {e["severity"] for e in reconnects} == {"WARNING"}
    assert [e for e in entries() if e["severity"] in ("ERROR", "CRITICAL")] == []
