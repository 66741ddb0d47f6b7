"""Redis mode's parts against a real Redis: leases and their fencing, published views,
token sealing, the shared guards, notices, and the CPU count gunicorn starts workers by.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from discord.http import Route

from membersense.cluster.connection import RedisConnection
from membersense.cluster.guards import SharedFailedTokens, SharedInvalidRequestBudget
from membersense.cluster.leases import LEASE_RELEASED, Leases
from membersense.cluster.notices import Notices
from membersense.cluster.sealing import TokenSealer
from membersense.cluster.views import ViewCache, ViewMirror
from membersense.cluster.wiring import build
from membersense.cluster.writer import Writer
from membersense.config import load_settings
from membersense.discord import compat
from membersense.discord.errors import HeldBack, InvalidToken
from membersense.discord.published import BotView, ChannelEntry, GuildView
from membersense.discord.serializers import MemberRecord, RoleNames, RoleRecord
from membersense.discord.service import GuildSummary
from membersense.discord.snapshot import build_snapshot
from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer
from membersense.serving import available_cpus
from membersense.sessions import StoreUnavailable
from tests.fakes import FakeClock
from tests.integration.support import MAIN_TOKEN, wait_until, write_scenario

BOT = "f00dfeedf00dfeed"


@pytest.fixture
def connection(redis_url: str, redis_prefix: str) -> Iterator[RedisConnection]:
    made = RedisConnection(redis_url, redis_prefix)
    yield made
    made.close()


@pytest.fixture
def writer(connection: RedisConnection) -> Iterator[Writer]:
    made = Writer(connection)
    yield made
    made.close()


# -- leases ----------------------------------------------------------------------------


def test_one_holder_at_a_time_with_a_rising_fence(connection: RedisConnection) -> None:
    a, b = Leases(connection, 5), Leases(connection, 5)
    first = a.acquire(BOT)
    assert first is not None and b.acquire(BOT) is None
    assert a.holder(BOT) == (a.owner, first)
    assert a.renew(BOT, first) and not b.renew(BOT, first)  # another owner's value
    assert a.release(BOT, first) and not a.release(BOT, first)
    second = b.acquire(BOT)
    assert second is not None and second > first
    assert not a.renew(BOT, first)  # a former owner cannot extend the new one's lease


def test_a_lease_not_renewed_expires(connection: RedisConnection, redis_url: str) -> None:
    a, b = Leases(connection, 5), Leases(connection, 5)
    fence = a.acquire(BOT)
    assert fence is not None
    client = redis.Redis.from_url(redis_url)
    try:
        client.pexpire(connection.keys.lease(BOT), 1)  # as if the owner died a lease ago
    finally:
        client.close()
    time.sleep(0.01)
    assert b.acquire(BOT) == fence + 1
    assert not a.renew(BOT, fence)


def test_releasing_a_lease_tells_every_process(connection: RedisConnection) -> None:
    notices = Notices(connection)
    heard: list[str] = []
    notices.on(LEASE_RELEASED, heard.append)
    try:
        assert notices.wait_listening(5)
        leases = Leases(connection, 5)
        fence = leases.acquire(BOT)
        assert fence is not None and leases.release(BOT, fence)
        wait_until(lambda: heard == [BOT], timeout=5, what="the notice")
    finally:
        notices.close()


# -- published views ---------------------------------------------------------------------------


def view(name: str, members: int) -> BotView:
    records = [
        MemberRecord(10 + i, f"user{i}", None, None, None, None, "0", (), None, False)
        for i in range(members)
    ]
    snapshot = build_snapshot(1, 7, records, RoleNames(7, [RoleRecord(7, "@everyone", 0)]))
    channel = ChannelEntry(
        {"id": "70", "name": "general", "type": "text"}, "text", True, True, True
    )
    news = ChannelEntry({"id": "71", "name": "news", "type": "text"}, "text", True, True, False)
    guild = GuildView(
        GuildSummary("7", name, members, None),
        True,
        (channel, news),
        {70: channel, 71: news},
        snapshot,
        None,
    )
    return BotView({7: guild})


def test_a_view_mirrored_by_the_owner_reads_back_everywhere(
    connection: RedisConnection, writer: Writer, redis_url: str, redis_prefix: str
) -> None:
    leases = Leases(connection, 5)
    fence = leases.acquire(BOT)
    assert fence is not None
    mirror = ViewMirror(
        connection, writer, retention_s=60, lease_token=lambda bot: leases.token(fence)
    )
    mirror.publish(BOT, view("Guild", 3000), None)
    writer.flush(5)
    elsewhere = RedisConnection(redis_url, redis_prefix)
    try:
        published = ViewCache(elsewhere).get(BOT)
        assert published is not None and published.failure is None
        guild = published.view.guilds[7]
        assert guild.summary.name == "Guild" and guild.channel_index[70].readable
        # What the bot may do in each channel, as non-owners check it before sending.
        assert guild.channel_index[70].sendable and not guild.channel_index[71].sendable
        original = view("Guild", 3000).guilds[7].members
        assert guild.members is not None and original is not None
        assert guild.members.document.etag == original.document.etag
        assert guild.members.document.plain() == original.document.plain()
        assert guild.members.page(5, 2000).body == original.page(5, 2000).body
    finally:
        elsewhere.close()


def test_a_former_owners_writes_are_refused(
    connection: RedisConnection, writer: Writer, redis_url: str
) -> None:
    old, new = Leases(connection, 5), Leases(connection, 5)
    old_fence = old.acquire(BOT)
    assert old_fence is not None
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(connection.keys.lease(BOT))  # the old owner stalled past its lease
    finally:
        client.close()
    new_fence = new.acquire(BOT)
    assert new_fence is not None
    ViewMirror(
        connection, writer, retention_s=60, lease_token=lambda bot: new.token(new_fence)
    ).publish(BOT, view("New", 2), None)
    ViewMirror(
        connection, writer, retention_s=60, lease_token=lambda bot: old.token(old_fence)
    ).publish(BOT, view("Stale", 9), None)
    writer.flush(5)
    published = ViewCache(connection).get(BOT)
    assert published is not None and published.view.guilds[7].summary.name == "New"


def test_a_copy_is_revalidated_by_version_and_members_fetched_only_when_changed(
    connection: RedisConnection, writer: Writer
) -> None:
    leases = Leases(connection, 5)
    fence = leases.acquire(BOT)
    assert fence is not None
    mirror = ViewMirror(
        connection, writer, retention_s=60, lease_token=lambda bot: leases.token(fence)
    )
    first = view("One", 5)
    mirror.publish(BOT, first, None)
    writer.flush(5)
    cache = ViewCache(connection)
    one = cache.get(BOT)
    assert one is not None and cache.get(BOT) is one  # same version: the same copy
    renamed = BotView(
        {
            7: GuildView(
                GuildSummary("7", "Two", 5, None), True, (), {}, first.guilds[7].members, None
            )
        }
    )
    mirror.publish(BOT, renamed, None)
    writer.flush(5)
    two = cache.get(BOT)
    assert two is not None and two is not one and two.view.guilds[7].summary.name == "Two"
    assert two.view.guilds[7].members is one.view.guilds[7].members  # same ETag: not fetched


# -- sealing ----------------------------------------------------------------------------------------


def test_tokens_are_sealed_and_open_only_under_the_same_secret() -> None:
    sealer = TokenSealer("x" * 32)
    sealed = sealer.seal("my-bot-token")
    assert "my-bot-token" not in sealed and sealer.open(sealed) == "my-bot-token"
    assert sealer.seal("my-bot-token") != sealed  # a fresh IV each time
    assert TokenSealer("y" * 32).open(sealed) is None
    assert sealer.open(sealed[:-4] + "AAAA") is None  # tampered with
    assert sealer.current(sealed) and not TokenSealer("y" * 32).current(sealed)


# -- the shared guards ---------------------------------------------------------------------------------


def test_the_invalid_request_budget_is_one_for_every_process(
    connection: RedisConnection, writer: Writer, redis_url: str, redis_prefix: str
) -> None:
    other = RedisConnection(redis_url, redis_prefix)
    other_writer = Writer(other)
    clock = FakeClock()
    try:
        here = SharedInvalidRequestBudget(connection, writer, 4, clock=clock)
        there = SharedInvalidRequestBudget(other, other_writer, 4, clock=clock)
        for status in (401, 403):
            here.record(status)
        there.record(429, "shared")  # not counted, as Discord does not
        there.record(429)
        writer.flush(5)
        other_writer.flush(5)
        here.check()
        there.record(401)
        other_writer.flush(5)
        clock.advance(2)  # past the local copy's second
        with pytest.raises(HeldBack) as refused:
            here.check()
        assert 590 < (refused.value.retry_after or 0) <= 600
    finally:
        other_writer.close()
        other.close()


def test_a_refused_token_is_refused_by_every_process(
    connection: RedisConnection, redis_url: str, redis_prefix: str
) -> None:
    other = RedisConnection(redis_url, redis_prefix)
    try:
        SharedFailedTokens(connection).add("junk-token")
        with pytest.raises(InvalidToken):
            SharedFailedTokens(other).check("junk-token")
        SharedFailedTokens(other).check("another-token")
    finally:
        other.close()


# -- Redis trouble ------------------------------------------------------------------------------------


def test_an_unreachable_redis_fails_fast_after_the_first_failure() -> None:
    from tests.servers import free_port

    dead = RedisConnection(f"redis://127.0.0.1:{free_port()}/0", "x:")
    try:
        with pytest.raises(StoreUnavailable):
            dead.call(dead.client.ping)
        started = time.monotonic()
        for _ in range(100):
            with pytest.raises(StoreUnavailable):
                dead.call(dead.client.ping)
        assert time.monotonic() - started < 0.5  # the circuit is open: no connect attempts
        assert not dead.ping()
    finally:
        dead.close()


# -- workers -------------------------------------------------------------------------------------------


def test_workers_follow_the_cpus_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import membersense.serving as serving

    monkeypatch.setattr(serving.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(serving, "_cgroup_cpu_quota", lambda: None)
    assert available_cpus() == 4
    monkeypatch.setattr(serving, "_cgroup_cpu_quota", lambda: 2)  # a container's quota
    assert available_cpus() == 2
    assert (
        serving.gunicorn_options(
            serving.load_settings(
                environ={},
                overrides={"REDIS_URL": "redis://127.0.0.1:6379/0", "SESSION_SECRET": "s" * 32},
            )
        )["workers"]
        == 2
    )
    assert (
        serving.gunicorn_options(
            serving.load_settings(
                environ={},
                overrides={
                    "REDIS_URL": "redis://127.0.0.1:6379/0",
                    "SESSION_SECRET": "s" * 32,
                    "WEB_CONCURRENCY": "3",
                },
            )
        )["workers"]
        == 3
    )
    assert (
        serving.gunicorn_options(
            serving.load_settings(environ={}, overrides={"WEB_CONCURRENCY": "3"})
        )["workers"]
        == 1
    )  # memory mode: one


def test_writes_keep_their_order(connection: RedisConnection, writer: Writer) -> None:
    key = connection.keys.base + "order"
    for n in range(500):
        writer.submit(lambda pipeline, n=n: pipeline.rpush(key, n))
    assert writer.flush(5)
    assert [int(v) for v in connection.client.lrange(key, 0, -1)] == list(range(500))


def test_nothing_starts_until_first_used(redis_url: str, redis_prefix: str) -> None:
    before = {t.name for t in threading.enumerate()}
    connection = RedisConnection(redis_url, redis_prefix)
    Notices(connection)
    Writer(connection)
    assert {t.name for t in threading.enumerate()} == before
    connection.close()


def test_a_process_that_connects_no_bot_calls_the_discord_it_is_configured_with(
    redis_url: str, redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # History and sending for a bot another process connects go through this process's own
    # REST client. discord.py reads Discord's address from a class attribute, which until
    # now only a gateway connection set: in a fresh process it still names discord.com.
    monkeypatch.setattr(compat, "_endpoints", None)
    monkeypatch.setattr(Route, "BASE", "http://127.0.0.1:9/api/v10")  # nothing listens there
    sandbox = SandboxServer(
        SandboxConfig(port=0, scenario=write_scenario(tmp_path / "world.json", 10))
    ).start()
    parts = build(
        load_settings(
            environ={},
            overrides={
                "REDIS_URL": redis_url,
                "REDIS_KEY_PREFIX": redis_prefix,
                "SESSION_SECRET": "s" * 32,
                "DISCORD_API_BASE": sandbox.api_url,
                "DISCORD_GATEWAY_URL": sandbox.gateway_url,
            },
        )
    )
    discord = parts.discord
    try:
        client = discord.bridge.call(discord._rest_client, BOT, MAIN_TOKEN, timeout=10)
        me = discord.bridge.call(client.get_user, "@me", timeout=10)
        assert me["username"] == "Main Bot"
        assert compat.endpoint_users() == 1
    finally:
        discord.close()
        parts.close_after_discord()
        sandbox.stop()
    assert compat.endpoint_users() == 0  # given back with the client


def test_a_stopping_owner_writes_what_it_published_before_it_lets_its_bots_go(
    redis_url: str, redis_prefix: str
) -> None:
    parts = build(
        load_settings(
            environ={},
            overrides={
                "REDIS_URL": redis_url,
                "REDIS_KEY_PREFIX": redis_prefix,
                "SESSION_SECRET": "s" * 32,
            },
        )
    )
    discord, client = parts.discord, parts.redis.client
    fence = discord.leases.acquire(BOT)
    assert fence is not None
    discord._owned[BOT] = fence  # as a takeover leaves it
    key = f"{redis_prefix}last-event"

    def slow_write(pipeline: Any) -> None:  # the last events, still queued at the SIGTERM
        time.sleep(0.3)
        pipeline.set(key, "written")

    parts.writer.submit(slow_write)
    written_at_release = []
    release = discord.leases.release

    def watched_release(bot: str, fence: int) -> bool:
        written_at_release.append(client.get(key))
        return release(bot, fence)

    discord.leases.release = watched_release  # type: ignore[method-assign]
    try:
        discord.close()
    finally:
        parts.close_after_discord()
    assert written_at_release == [b"written"]


def test_a_held_lease_says_how_long_it_still_runs(connection: RedisConnection) -> None:
    a, b = Leases(connection, 5), Leases(connection, 5)
    taken = a.attempt(BOT)
    assert taken.fence is not None and taken.runs_out_in_s == 0
    held = b.attempt(BOT)
    assert held.fence is None and 4.0 < held.runs_out_in_s <= 5.0
    assert a.release(BOT, taken.fence)
    assert b.attempt(BOT).fence == taken.fence + 1


def _cluster_settings(redis_url: str, redis_prefix: str) -> Any:
    return load_settings(
        environ={},
        overrides={
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": redis_prefix,
            "SESSION_SECRET": "s" * 32,
        },
    )


def test_the_keeper_tries_again_the_moment_a_held_lease_runs_out(
    redis_url: str, redis_prefix: str
) -> None:
    # An owner killed just after renewing: its lease runs its whole time. The keeper's next
    # round is set for the lease's end, not a third of a lease after it.
    clock = FakeClock()
    parts = build(_cluster_settings(redis_url, redis_prefix), clock=clock)
    discord = parts.discord
    other = Leases(parts.redis, 1.0)
    try:
        period = discord.leases.lease_s / 3
        assert discord._until_next_round(period) == period  # nothing held: a normal round
        fence = other.acquire(BOT)
        assert fence is not None
        assert not discord._take_lease(BOT)
        wait = discord._until_next_round(period)
        assert 0.5 < wait <= 1.0 + 0.05 < period  # the holder's 1 s, and a little margin
        assert discord._until_next_round(period) == period  # asked once
        time.sleep(1.1)  # Redis's own clock ends the lease
        assert discord._take_lease(BOT)
        assert discord.leases.holder(BOT) == (discord.leases.owner, fence + 1)
    finally:
        discord.close()
        parts.close_after_discord()


def test_a_stopping_process_takes_no_lease(redis_url: str, redis_prefix: str) -> None:
    # Its sibling workers stop with it: taking the lease one of them just released would
    # mean a connection for nothing and a second handover.
    parts = build(_cluster_settings(redis_url, redis_prefix))
    discord = parts.discord
    try:
        discord.refuse_new()
        assert not discord._take_lease(BOT)
        assert discord.leases.holder(BOT) is None  # it did not even try
    finally:
        discord.close()
        parts.close_after_discord()
