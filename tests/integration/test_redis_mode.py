"""Redis mode under real gunicorn: two instances of two workers each, one sandbox, one Redis.

Sessions, published bot state, events, rate limits and the invalid-request guards are
shared through Redis; each bot has one gateway connection in the whole cluster, owned by
whichever process holds its lease, and another process takes over when the owner stops
or dies.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from membersense.sandbox.server import SandboxServer
from tests.integration.conftest import LEASE_S, SECRET, Cluster, MemberSense, api_of
from tests.integration.support import (
    DISCORD_SHAPED_TOKEN,
    MAIN_TOKEN,
    MULTI_TOKEN,
    SECOND_TOKEN,
    Api,
    children,
    wait_until,
)
from tests.redis_support import RedisServer

#: Leases long enough that waiting one out cannot pass for a handover.
LONG_LEASE_S = 30.0


@pytest.fixture
def cluster(sandbox: SandboxServer, module_tmp: Path, redis_url: str) -> Iterator[Cluster]:
    made = Cluster(sandbox, module_tmp, redis_url)
    yield made
    made.stop()


def members_of(api: Api, session: str) -> list[dict]:
    response = api.get("/api/members", session)
    assert response.status_code == 200, response.text
    return response.json()


def test_two_instances_share_sessions_state_and_one_gateway_connection(cluster: Cluster) -> None:
    a, b = cluster.start(), cluster.start()
    api_a, api_b, control = api_of(a), api_of(b), a.control
    session = api_a.login(MAIN_TOKEN)
    try:
        channel = next(
            c["id"] for c in api_b.get("/api/channels", session).json() if c["name"] != "staff-only"
        )
        for _ in range(6):  # several requests: both workers of B answer some
            assert len(members_of(api_b, session)) > 1000
            # History comes from B's own REST client (B connects no bot).
            history = api_b.get("/api/messages", session, channelId=channel, limit=2)
            assert history.status_code == 200 and len(history.json()) == 2, history.text
        second = api_b.login(MAIN_TOKEN)  # the same bot, on the other instance
        assert control.connections_of("Main Bot") == 1
        assert control.gateway()["identified"] >= 1

        # A member added in Discord shows on every worker of both instances (copies are
        # revalidated every 0.2 s; BENCHMARKS.md has how long it takes).
        guild = control.guild_id("Alpha")
        added = control.request("POST", f"/guilds/{guild}/members", username="cluster_newbie")

        def everywhere() -> bool:
            return all(
                any(m["id"] == added["user"]["id"] for m in members_of(api, second))
                for api in (api_a, api_b, api_a, api_b, api_a, api_b)
            )

        wait_until(everywhere, timeout=LEASE_S, what="the new member on every worker")

        # A logout on B ends the session on A at once.
        assert api_b.logout(session).status_code == 200
        assert api_a.get("/api/members", session).status_code == 401
        assert api_a.get("/api/channels", second).status_code == 200
        api_a.logout(second)
    finally:
        api_a.logout(session)


def test_one_rate_limit_budget_across_instances(cluster: Cluster) -> None:
    a, b = (
        cluster.start(RATE_LIMIT_MAX_REQUESTS="10", RATE_LIMIT_WINDOW="60000") for _ in range(2)
    )
    statuses = []
    for n in range(12):
        api = api_of(a if n % 2 else b)
        statuses.append(api.http.get(f"{api.base_url}/api/members", timeout=10).status_code)
    assert statuses[:10] == [401] * 10  # counted, however they were answered
    assert statuses[10:] == [429, 429]


def test_the_cap_holds_under_concurrent_logins_across_instances(cluster: Cluster) -> None:
    # Logins may all wait on Discord at once here: the cap, not the login bulkhead, decides.
    a, b = (cluster.start(MAX_CONCURRENT_USERS="10", MAX_CONCURRENT_LOGINS="32") for _ in range(2))
    urls = [api_of(a).base_url, api_of(b).base_url]

    def login(n: int) -> int:
        return requests.post(
            f"{urls[n % 2]}/api/auth/login", json={"token": MULTI_TOKEN}, timeout=60
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(login, range(30)))
    assert statuses.count(200) == 10, statuses
    assert set(statuses) == {200, 503}
    client = redis.Redis.from_url(cluster.url)
    try:
        assert client.zcard(f"{cluster.prefix}v1:sessions") == 10
    finally:
        client.close()


def test_a_killed_owner_is_replaced_within_the_lease_time(cluster: Cluster) -> None:
    a, b = cluster.start(), cluster.start()
    control = a.control
    session = api_of(a).login(SECOND_TOKEN)
    api_of(b).get("/api/members", session)  # B knows the bot has sessions
    owner = wait_until(lambda: cluster.owner_of([a, b]), what="the owner")
    survivor = b if owner is a else a
    assert control.connections_of("Second Bot") == 1
    assert owner.server.process is not None
    master = owner.server.process.pid
    for pid in [*children(master), master]:
        os.kill(pid, signal.SIGKILL)
    owner.server.process.wait(10)
    killed = time.monotonic()
    api = api_of(survivor)
    # Reads go on from the last published state meanwhile.
    assert api.get("/api/members", session).status_code == 200
    wait_until(
        lambda: (
            control.connections_of("Second Bot") == 1 and cluster.owner_of([survivor]) is survivor
        ),
        timeout=LEASE_S + 10,
        what="the survivor to take the bot over",
    )
    took_over = time.monotonic() - killed
    assert took_over < LEASE_S + 5, took_over
    # Fresh data: a member added now shows through the new owner.
    guild = control.guild_id("Alpha")
    added = control.request("POST", f"/guilds/{guild}/members", username="after_the_kill")
    wait_until(
        lambda: any(m["id"] == added["user"]["id"] for m in members_of(api, session)),
        timeout=10,
        what="fresh members from the new owner",
    )
    assert control.connections_of("Second Bot") == 1
    api.logout(session)


def test_a_stopping_owner_hands_over_at_once(cluster: Cluster) -> None:
    # Long leases: a handover well inside one is a released lease, not an expired one.
    a, b = (cluster.start(BOT_LEASE_TIME=str(int(LONG_LEASE_S * 1000))) for _ in range(2))
    session = api_of(a).login(MAIN_TOKEN)
    api_of(b).get("/api/members", session)
    owner = wait_until(lambda: cluster.owner_of([a, b]), what="the owner")
    survivor = b if owner is a else a
    stopped = time.monotonic()
    assert owner.server.stop() == 0  # SIGTERM: the lease is released, not left to expire
    wait_until(
        lambda: cluster.owner_of([survivor]) is survivor,
        timeout=LEASE_S + 10,
        what="the survivor to take over",
    )
    assert time.monotonic() - stopped < LONG_LEASE_S / 2
    assert owner.control.connections_of("Main Bot") == 1
    assert len(members_of(api_of(survivor), session)) > 1000
    api_of(survivor).logout(session)


def test_the_last_logout_anywhere_closes_the_connection_after_the_linger(cluster: Cluster) -> None:
    a, b = (cluster.start(CONNECTION_LINGER="500") for _ in range(2))
    session = api_of(a).login(MULTI_TOKEN)
    assert a.control.connections_of("Multi Bot") == 1
    api_of(b).logout(session)
    wait_until(
        lambda: a.control.connections_of("Multi Bot") == 0,
        timeout=LEASE_S + 5,
        what="the owner to close the unused connection",
    )
    client = redis.Redis.from_url(cluster.url)
    try:
        # Member lists and message contents go with the bot's last session.
        left = [k.decode() for k in client.scan_iter(match=f"{cluster.prefix}*")]
        assert not [k for k in left if ":guild:" in k or ":events:" in k or k.endswith(":view")]
    finally:
        client.close()


def test_no_redis_key_or_value_holds_a_token(cluster: Cluster) -> None:
    a = cluster.start(workers=1)
    sessions = [api_of(a).login(token) for token in (MAIN_TOKEN, DISCORD_SHAPED_TOKEN)]
    api_of(a).post_login("not-a-real-token")  # refused: remembered by fingerprint only
    client = redis.Redis.from_url(cluster.url)
    try:
        seen = 0
        for key in client.scan_iter(match=f"{cluster.prefix}*"):
            kind = client.type(key).decode()
            values: list[bytes] = [key]
            if kind == "string":
                values.append(client.get(key) or b"")
            elif kind == "hash":
                values += [item for pair in client.hgetall(key).items() for item in pair]
            elif kind == "zset":
                values += client.zrange(key, 0, -1)
            elif kind == "stream":
                for _, fields in client.xrange(key):
                    values += [item for pair in fields.items() for item in pair]
            for value in values:
                for token in (MAIN_TOKEN, DISCORD_SHAPED_TOKEN, "not-a-real-token"):
                    assert token.encode() not in value, key
            seen += 1
        assert seen > 5
    finally:
        client.close()
    for session in sessions:
        api_of(a).logout(session)


def test_redis_mode_needs_a_session_secret(
    sandbox: SandboxServer, module_tmp: Path, redis_url: str
) -> None:
    instance = MemberSense(sandbox, module_tmp / "no-secret.log", REDIS_URL=redis_url)
    with pytest.raises(RuntimeError):
        instance.start()
    assert "SESSION_SECRET must be at least 32 characters in Redis mode" in instance.server.log()


def _refused(response: requests.Response) -> tuple[requests.Response] | None:
    """*response* if it is a 503, else None (it was a 200: anything else fails here).

    In a tuple: a response is false when its status is an error.
    """
    if response.status_code == 503:
        return (response,)
    assert response.status_code == 200, response.text
    return None


def test_redis_trouble_is_a_503_then_service_resumes_with_the_same_sessions(
    sandbox: SandboxServer, module_tmp: Path, tmp_path: Path
) -> None:
    own = RedisServer(data_dir=tmp_path).start()  # keeps what it has on disk (AOF)
    instance = MemberSense(
        sandbox,
        module_tmp / "outage.log",
        REDIS_URL=own.url,
        SESSION_SECRET=SECRET,
        WEB_CONCURRENCY="1",
    ).start()
    api = api_of(instance)
    try:
        session = api.login(MAIN_TOKEN)
        assert api.http.get(f"{api.base_url}/_ah/ready", timeout=5).status_code == 200
        own.stop()
        # Until this process's notice listener sees its connection drop (milliseconds), a
        # request may still be answered from the process's own copies (the cached session,
        # the snapshot it owns); from then on every request that needs Redis is refused.
        (refused,) = wait_until(
            lambda: _refused(api.get("/api/members", session)),
            timeout=5,
            what="a request to find Redis gone",
        )
        assert refused.json()["error"] == "Session store unavailable"
        assert int(refused.headers["Retry-After"]) >= 1
        assert api.post_login(MAIN_TOKEN).status_code == 503
        assert api.http.get(f"{api.base_url}/_ah/health", timeout=5).status_code == 200
        not_ready = api.http.get(f"{api.base_url}/_ah/ready", timeout=5)
        assert not_ready.status_code == 503 and "Retry-After" in not_ready.headers
        own.start()  # the same data directory
        wait_until(
            lambda: api.get("/api/members", session).status_code == 200,
            timeout=15,
            what="service to resume",
        )
        assert api.http.get(f"{api.base_url}/_ah/ready", timeout=5).status_code == 200
        assert api.logout(session).status_code == 200
    finally:
        instance.stop()
        own.stop()
