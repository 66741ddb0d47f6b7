"""Staying out of Discord's invalid-request ban: the budget, the failed-token memory,
and the discord.py service using both against a sandbox that bans like Discord does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from membersense.discord.errors import HeldBack, InvalidToken, MissingAccess
from membersense.discord.invalid_requests import (
    FAILED_TOKEN_TTL_S,
    INVALID_REQUEST_WINDOW_S,
    TENANT_HELD_BACK,
    FailedTokens,
    InvalidRequestBudget,
)
from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer
from tests.fakes import FakeClock
from tests.inprocess import Bots
from tests.integration.support import MAIN_TOKEN, SECOND_TOKEN, Control, write_scenario

# -- the budget -------------------------------------------------------------------


def test_the_budget_counts_what_discord_counts() -> None:
    budget = InvalidRequestBudget(100, clock=FakeClock())
    for status in (200, 204, 304, 400, 404, 500, 502):
        budget.record(status)
    budget.record(429, "shared")  # Discord leaves shared-limit 429s out
    assert budget.count() == 0 and budget.total == 0
    for status, scope in ((401, None), (403, None), (429, "user"), (429, "global"), (429, None)):
        budget.record(status, scope)
    assert budget.count() == 5 and budget.total == 5


def test_a_spent_budget_refuses_until_the_window_slides_past_the_oldest() -> None:
    clock = FakeClock()
    budget = InvalidRequestBudget(3, clock=clock)
    for _ in range(2):
        budget.record(401)
        clock.advance(10)
    budget.check()  # two of three: calls still go
    budget.record(403)  # at t+20: the third
    with pytest.raises(HeldBack) as refused:
        budget.check()
    assert refused.value.retry_after == INVALID_REQUEST_WINDOW_S - 20
    assert "try again later" in refused.value.message
    clock.advance(INVALID_REQUEST_WINDOW_S - 20 - 1)
    assert budget.retry_after() == 1
    clock.advance(1)  # the first answer left the window
    budget.check()
    assert budget.count() == 2
    clock.advance(10)
    assert budget.count() == 1


def test_the_budget_keeps_no_more_than_its_limit() -> None:
    clock = FakeClock()
    budget = InvalidRequestBudget(5, clock=clock)
    for _ in range(1000):
        budget.record(429)
        clock.advance(0.001)
    assert len(budget._times) == 5 and budget.total == 1000
    assert budget.retry_after() == pytest.approx(INVALID_REQUEST_WINDOW_S - 0.005)


# -- the failed-token memory ---------------------------------------------------------


def test_a_refused_token_is_answered_401_until_it_is_forgotten() -> None:
    clock = FakeClock()
    failed = FailedTokens(clock=clock)
    failed.check("junk")  # never refused: nothing to say
    failed.add("junk")
    with pytest.raises(InvalidToken) as refused:
        failed.check("junk")
    assert refused.value.message == "Invalid Discord token"
    failed.check("other")
    clock.advance(FAILED_TOKEN_TTL_S - 1)
    with pytest.raises(InvalidToken):
        failed.check("junk")
    clock.advance(1)
    failed.check("junk")  # Discord may be asked again
    assert len(failed) == 0


def test_the_memory_is_bounded_and_forgets_the_least_recently_seen() -> None:
    failed = FailedTokens(capacity=3, clock=FakeClock())
    for token in ("a", "b", "c"):
        failed.add(token)
    with pytest.raises(InvalidToken):
        failed.check("a")  # seen again: kept
    failed.add("d")
    assert len(failed) == 3
    failed.check("b")  # forgotten
    for token in ("a", "c", "d"):
        with pytest.raises(InvalidToken):
            failed.check(token)


def test_tokens_are_kept_as_fingerprints_only() -> None:
    failed = FailedTokens(clock=FakeClock())
    failed.add("MTE0NTE0MTkxOTgxMDg5MzQ0MA.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789")
    assert "MTE0NTE0" not in repr(failed) and "MTE0NTE0" not in repr(failed._expiry)


# -- the discord.py service, against a sandbox that bans like Discord ---------------------------

SANDBOX_LIMIT = 5  # the sandbox bans this process after more than 5 invalid answers


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    scenario = write_scenario(tmp_path_factory.mktemp("guard") / "world.json", 50)
    server = SandboxServer(
        SandboxConfig(
            port=0,
            scenario=scenario,
            member_request_cooldown_s=0.2,
            invalid_request_limit=SANDBOX_LIMIT,
            invalid_request_ban_s=600,
        )
    ).start()
    yield server
    server.stop()


@pytest.fixture
def control(sandbox: SandboxServer) -> Iterator[Control]:
    client = Control(sandbox.base_url)
    client.request("POST", "/ratelimits/reset")  # no counts or bans from earlier tests
    yield client
    client.request("DELETE", "/faults")
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_bots(sandbox: SandboxServer, clock: FakeClock) -> Iterator:
    made: list[Bots] = []

    def make(**settings: str) -> Bots:
        bots = Bots(sandbox, clock=clock, **settings)
        made.append(bots)
        return bots

    yield make
    for bots in made:
        bots.close()


def banned(control: Control) -> bool:
    return bool(control.state()["invalid_request_guard"]["banned"])


def junk(n: int) -> str:
    return f"junk-token-{n}"


def test_logging_one_bad_token_in_again_and_again_costs_one_invalid_request(
    make_bots, control: Control, clock: FakeClock
) -> None:
    bots = make_bots()
    for _ in range(3 * SANDBOX_LIMIT):
        with pytest.raises(InvalidToken) as refused:
            bots.login(junk(0))
        assert refused.value.message == "Invalid Discord token"
    assert bots.discord.invalid_requests.total == 1  # Discord was asked once
    assert not banned(control)
    bots.login(MAIN_TOKEN).logout()

    clock.advance(FAILED_TOKEN_TTL_S)  # forgotten: Discord is asked again
    with pytest.raises(InvalidToken):
        bots.login(junk(0))
    assert bots.discord.invalid_requests.total == 2


def test_a_spent_budget_holds_back_logins_and_message_reads_until_the_window_slides(
    make_bots, control: Control, clock: FakeClock
) -> None:
    bots = make_bots(DISCORD_INVALID_REQUEST_LIMIT="3")
    session = bots.login(MAIN_TOKEN)
    channel = next(c["id"] for c in session.channels() if c["name"] != "staff-only")
    assert session.messages(channel, limit=2)
    for n in range(3):
        with pytest.raises(InvalidToken):
            bots.login(junk(n))
    for n in range(3, 3 + 2 * SANDBOX_LIMIT):  # more than enough to get Discord to ban us
        with pytest.raises(HeldBack) as refused:
            bots.login(junk(n))
        assert refused.value.retry_after == INVALID_REQUEST_WINDOW_S
    assert "refused too many requests" in refused.value.message
    with pytest.raises(HeldBack):
        bots.login(SECOND_TOKEN)  # a new login needs Discord too
    with pytest.raises(HeldBack):
        session.messages(channel, limit=2)
    assert bots.discord.invalid_requests.total == 3 and not banned(control)
    # What needs no call to Discord goes on: published reads, joining a live connection.
    assert len(session.members().plain()) > 1000 and session.channels()
    bots.login(MAIN_TOKEN).logout()

    clock.advance(INVALID_REQUEST_WINDOW_S)
    assert session.messages(channel, limit=2)
    bots.login(SECOND_TOKEN).logout()
    session.logout()


def test_refused_message_reads_count_and_shared_rate_limits_do_not(
    make_bots, control: Control
) -> None:
    bots = make_bots(DISCORD_INVALID_REQUEST_LIMIT="2")
    session = bots.login(MAIN_TOKEN)
    channels = session.channels()
    readable = next(c["id"] for c in channels if c["name"] != "staff-only")
    hidden = int(next(c["id"] for c in channels if c["name"] == "staff-only"))
    # A shared-limit 429 (discord.py waits it out): Discord does not count it.
    control.request(
        "POST", "/faults", status=429, retry_after=0.05, count=1, path="/channels/*/messages"
    )
    assert session.messages(readable, limit=2)
    assert bots.discord.invalid_requests.total == 0

    # The published state says the bot may read the hidden channel (an update it has not
    # seen yet, say): the read goes to Discord, which answers 403. Those count.
    connection = bots.connection(MAIN_TOKEN)
    guild_id = int(session.record.guild_ids[0])

    def forget_the_channels_overwrites() -> None:
        client = connection._client
        assert client is not None
        client.get_channel(hidden)._overwrites = []  # type: ignore[union-attr]
        guild = client.get_guild(guild_id)
        assert guild is not None
        connection.publisher.publish_guild(guild)

    bots.on_loop(forget_the_channels_overwrites)
    for _ in range(2):
        with pytest.raises(MissingAccess):
            session.messages(hidden, limit=2)
    assert bots.discord.invalid_requests.total == 2
    with pytest.raises(HeldBack):
        session.messages(hidden, limit=2)
    with pytest.raises(HeldBack):
        session.messages(readable, limit=2)
    assert bots.discord.invalid_requests.total == 2  # neither reached Discord
    session.logout()


def test_one_bot_spends_only_its_share_of_the_budget() -> None:
    clock = FakeClock()
    budget = InvalidRequestBudget(100, clock=clock)  # a bot's share: 10
    for _ in range(10):
        budget.record(403, tenant="noisy")
    with pytest.raises(HeldBack) as refused:
        budget.check("noisy")
    assert refused.value.message == TENANT_HELD_BACK
    assert refused.value.retry_after == INVALID_REQUEST_WINDOW_S
    budget.check("quiet")  # everyone else goes on
    budget.check()
    clock.advance(INVALID_REQUEST_WINDOW_S)
    budget.check("noisy")


def test_the_shared_budget_holds_one_bot_back_by_its_share(
    redis_url: str, redis_prefix: str
) -> None:
    from membersense.cluster.connection import RedisConnection
    from membersense.cluster.guards import SharedInvalidRequestBudget
    from membersense.cluster.writer import Writer

    connection = RedisConnection(redis_url, redis_prefix)
    writer = Writer(connection)
    try:
        budget = SharedInvalidRequestBudget(connection, writer, 50, clock=FakeClock())
        for _ in range(5):
            budget.record(401, tenant="noisy")
        writer.flush(5)
        with pytest.raises(HeldBack) as refused:
            budget.check("noisy")
        assert refused.value.message == TENANT_HELD_BACK
        budget.check("quiet")
    finally:
        writer.close()
        connection.close()


def test_a_bot_refused_again_and_again_is_held_back_before_the_others(
    make_bots, control: Control
) -> None:
    bots = make_bots(DISCORD_INVALID_REQUEST_LIMIT="50")  # a bot's share: 5
    noisy, quiet = bots.login(MAIN_TOKEN), bots.login(SECOND_TOKEN)
    hidden = int(next(c["id"] for c in noisy.channels() if c["name"] == "staff-only"))
    connection = bots.connection(MAIN_TOKEN)
    guild_id = int(noisy.record.guild_ids[0])

    def forget_the_channels_overwrites() -> None:
        client = connection._client
        assert client is not None
        client.get_channel(hidden)._overwrites = []  # type: ignore[union-attr]
        guild = client.get_guild(guild_id)
        assert guild is not None
        connection.publisher.publish_guild(guild)

    bots.on_loop(forget_the_channels_overwrites)
    for _ in range(5):
        with pytest.raises(MissingAccess):
            noisy.messages(hidden, limit=2)
    with pytest.raises(HeldBack) as refused:
        noisy.messages(hidden, limit=2)
    assert refused.value.message == TENANT_HELD_BACK
    assert bots.discord.invalid_requests.retry_after() == 0  # far from the whole budget
    readable = next(c["id"] for c in quiet.channels() if c["name"] != "staff-only")
    assert quiet.messages(readable, limit=2)  # the other bot is not held back
    noisy.logout()
    quiet.logout()
