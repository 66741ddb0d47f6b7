"""Sliding-window rate limiting per client IP, in memory and on Redis."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable

import pytest
import time_machine
from flask import Flask

START = 1_800_000_000.0  # a fixed wall-clock instant; the limiter uses time.time()


@pytest.fixture
def traveller() -> object:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for each storage: the Redis one counts with one script per request."""
    if request.param == "memory":
        return {}
    return {
        "RATE_LIMIT_STORAGE_URI": request.getfixturevalue("redis_url"),
        "REDIS_KEY_PREFIX": request.getfixturevalue("redis_prefix"),
    }


def hit(client, path: str = "/api/members", ip: str = "10.0.0.1", **headers: str):
    return client.get(path, environ_base={"REMOTE_ADDR": ip}, headers=headers)


def test_the_budget_is_per_ip_and_shared_by_every_route(
    make_app: Callable[..., Flask], traveller: object, storage: dict[str, str]
) -> None:
    client = make_app(RATE_LIMIT_MAX_REQUESTS=3, RATE_LIMIT_WINDOW=10000, **storage).test_client()
    statuses = [
        hit(client, path).status_code for path in ("/api/members", "/api/channels", "/api/messages")
    ]
    assert statuses == [401, 401, 401]
    blocked = hit(client)
    assert blocked.status_code == 429
    assert blocked.get_json() == {"error": "Too many requests", "retryAfter": 10}
    assert blocked.headers["Retry-After"] == "10"
    assert hit(client, ip="10.0.0.2").status_code == 401  # another client is unaffected


def test_rate_limit_headers_count_down(
    make_app: Callable[..., Flask], traveller: object, storage: dict[str, str]
) -> None:
    client = make_app(RATE_LIMIT_MAX_REQUESTS=2, RATE_LIMIT_WINDOW=60000, **storage).test_client()
    first = hit(client)
    assert first.headers["RateLimit-Limit"] == "2"
    assert first.headers["RateLimit-Remaining"] == "1"
    assert first.headers["RateLimit-Reset"] == "60"
    assert first.headers["RateLimit-Policy"] == "2;w=60"
    assert "Retry-After" not in first.headers
    assert hit(client).headers["RateLimit-Remaining"] == "0"
    blocked = hit(client)
    assert blocked.status_code == 429
    assert blocked.headers["RateLimit-Remaining"] == "0"


def test_the_window_slides_rather_than_resetting(
    make_app: Callable[..., Flask], traveller, storage: dict[str, str]
) -> None:
    client = make_app(RATE_LIMIT_MAX_REQUESTS=2, RATE_LIMIT_WINDOW=10000, **storage).test_client()
    assert hit(client).status_code == 401  # t=0
    traveller.shift(6)
    assert hit(client).status_code == 401  # t=6
    traveller.shift(3)
    blocked = hit(client)  # t=9: both still in the last 10 s
    assert blocked.status_code == 429
    assert blocked.get_json()["retryAfter"] == 1  # the t=0 request leaves at t=10
    traveller.shift(1.5)
    assert hit(client).status_code == 401  # t=10.5: the first has left the window
    assert hit(client).status_code == 429  # ... but t=6 and t=10.5 fill it again


def test_health_checks_and_preflights_are_never_limited(
    make_app: Callable[..., Flask], traveller: object
) -> None:
    client = make_app(RATE_LIMIT_MAX_REQUESTS=1).test_client()
    assert hit(client).status_code == 401
    assert hit(client).status_code == 429
    for _ in range(5):
        assert hit(client, "/_ah/health").status_code == 200
        preflight = client.options(
            "/api/members",
            environ_base={"REMOTE_ADDR": "10.0.0.1"},
            headers={"Origin": "https://a.example", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 204  # no content, never 429


def test_a_client_cannot_pick_its_own_address(
    make_app: Callable[..., Flask], traveller: object
) -> None:
    client = make_app(RATE_LIMIT_MAX_REQUESTS=1).test_client()
    assert hit(client, X_Forwarded_For="1.1.1.1").status_code == 401
    assert hit(client, **{"X-Forwarded-For": "2.2.2.2"}).status_code == 429


def test_behind_trusted_proxies_the_proxies_view_of_the_client_counts(
    make_app: Callable[..., Flask], traveller: object
) -> None:
    client = make_app(RATE_LIMIT_MAX_REQUESTS=1, TRUSTED_PROXIES=1).test_client()
    # The proxy appends the real peer; whatever the client prepended is ignored.
    assert hit(client, **{"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}).status_code == 401
    assert hit(client, **{"X-Forwarded-For": "7.7.7.7, 203.0.113.9"}).status_code == 429
    assert hit(client, **{"X-Forwarded-For": "203.0.113.10"}).status_code == 401


def test_idle_clients_are_forgotten(make_app: Callable[..., Flask], traveller) -> None:
    app = make_app(RATE_LIMIT_MAX_REQUESTS=5, RATE_LIMIT_WINDOW=1000)
    client = app.test_client()
    for n in range(50):
        hit(client, ip=f"10.1.0.{n}")
    storage = app.extensions["membersense.ratelimit"].storage
    assert len(storage.events) == 50
    traveller.shift(2)
    storage._MemoryStorage__expire_events()  # what its expiry timer runs
    assert storage.events == {}


def test_redis_storage_shares_one_budget_between_processes(
    make_app: Callable[..., Flask], traveller: object, redis_url: str
) -> None:
    config = {"RATE_LIMIT_MAX_REQUESTS": 2, "RATE_LIMIT_STORAGE_URI": redis_url}
    ip = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    first = make_app(**config).test_client()
    assert hit(first, ip=ip).status_code == 401
    second = make_app(**config).test_client()  # a second process, same Redis
    assert hit(second, ip=ip).status_code == 401
    assert hit(second, ip=ip).status_code == 429


def test_a_storage_outage_falls_back_to_memory(
    make_app: Callable[..., Flask], traveller: object, log_stream
) -> None:
    # Nothing listens on port 1: every Redis call fails.
    client = make_app(
        RATE_LIMIT_MAX_REQUESTS=2, RATE_LIMIT_STORAGE_URI="redis://127.0.0.1:1/0"
    ).test_client()
    assert [hit(client).status_code for _ in range(3)] == [401, 401, 429]
    assert "rate limit storage unreachable" in log_stream.getvalue()


def test_the_one_call_redis_window_and_limits_own_read_each_others_counts(
    redis_url: str, redis_prefix: str, traveller
) -> None:
    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    from membersense.ratelimit import RedisMovingWindow

    storage = RedisStorage(redis_url, key_prefix=f"{redis_prefix}ratelimit")
    ours, theirs = RedisMovingWindow(storage), MovingWindowRateLimiter(storage)
    item = RateLimitItemPerSecond(3, 10)

    def our_hit(identifier: str) -> tuple[bool, float, int]:
        taken = ours.reserve(item, ours.key(item, identifier), wanted=1, stamp=time.time())
        return bool(taken.taken), taken.reset, taken.remaining

    assert our_hit("a") == (True, START + 10, 2)
    traveller.shift(4)
    assert theirs.hit(item, "a")  # limits' own hit, at t=4
    assert our_hit("a") == (True, START + 10, 0)  # the oldest (t=0) sets the reset
    assert tuple(theirs.get_window_stats(item, "a")) == (START + 10, 0)
    assert our_hit("a") == (False, START + 10, 0)
    assert not theirs.hit(item, "a")
    traveller.shift(6.5)  # t=10.5: the t=0 entry has left
    assert our_hit("a") == (True, START + 14, 0)
    assert our_hit("b") == (True, START + 20.5, 2)  # another client's own window
    keys = storage.get_connection().keys(f"{redis_prefix}*")
    assert len(keys) == 2  # everything under the deployment's prefix


def test_the_memory_storage_sweeps_once_a_second_not_on_a_new_thread_every_10_ms() -> None:
    from limits import RateLimitItemPerSecond
    from limits.strategies import MovingWindowRateLimiter

    from membersense.ratelimit import SWEEP_INTERVAL_S, PrunedMemoryStorage

    storage = PrunedMemoryStorage()
    limiter, item = MovingWindowRateLimiter(storage), RateLimitItemPerSecond(1000, 1)
    timers = set()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # steady traffic: limits would start ~30 threads here
        limiter.hit(item, "10.0.0.1")
        timers.add(id(storage.timer))
        time.sleep(0.003)
    assert len(timers) <= 2  # the constructor's, then one sweep a second
    assert storage.timer.daemon and storage.timer.interval == SWEEP_INTERVAL_S
    storage.timer.cancel()


# -- Redis mode: places taken in blocks ------------------------------------------------


class _CountingWindow:
    """A RedisMovingWindow that counts its round trips."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        from limits.storage import RedisStorage

        from membersense.ratelimit import RedisMovingWindow

        self.inner = RedisMovingWindow(RedisStorage(redis_url, key_prefix=f"{prefix}ratelimit"))
        self.storage = self.inner.storage
        self.reservations = 0

    def key(self, item, identifier: str) -> str:
        return self.inner.key(item, identifier)

    def reserve(self, *args, **kwargs):
        self.reservations += 1
        return self.inner.reserve(*args, **kwargs)

    def give_back(self, places) -> None:
        self.inner.give_back(places)

    def entries(self, item, identifier: str) -> list[float]:
        redis = self.storage.get_connection()
        return [float(v) for v in redis.lrange(self.key(item, identifier), 0, -1)]


def _process(redis_url: str, prefix: str, window_s: int):
    """One process's view of the shared windows: (its blocks, their round-trip counter)."""
    from membersense.ratelimit import ReservedMovingWindow, block_lifetime

    counting = _CountingWindow(redis_url, prefix)
    return ReservedMovingWindow(counting, lifetime=block_lifetime(window_s)), counting


def test_a_busy_client_reaches_redis_about_once_per_block(
    redis_url: str, redis_prefix: str, traveller
) -> None:
    from limits import RateLimitItemPerSecond

    from membersense.ratelimit import MAX_SHARE

    item = RateLimitItemPerSecond(100_000, 60)
    blocks, counting = _process(redis_url, redis_prefix, 60)
    answers = [blocks.hit(item, "10.0.0.1") for _ in range(1000)]
    assert all(allowed for allowed, _, _ in answers)
    # Blocks of 1, 2, 4 ... MAX_SHARE, then MAX_SHARE each: not a round trip per request.
    assert counting.reservations <= 7 + (1000 - 127) // MAX_SHARE + 1
    assert counting.reservations >= 1000 // MAX_SHARE
    # Every request holds a place in the shared window before it is admitted.
    taken = len(counting.entries(item, "10.0.0.1"))
    assert 1000 <= taken < 1000 + MAX_SHARE
    # RateLimit-Remaining counts down by one per request within this process.
    remaining = [left for _, _, left in answers]
    assert remaining == list(range(100_000 - 1, 100_000 - 1001, -1))


def test_near_the_limit_every_place_is_counted_and_the_last_one_refused(
    redis_url: str, redis_prefix: str, traveller
) -> None:
    from limits import RateLimitItemPerSecond

    item = RateLimitItemPerSecond(160, 60)  # blocks of up to 10
    blocks, counting = _process(redis_url, redis_prefix, 60)
    answers = [blocks.hit(item, "10.0.0.1") for _ in range(161)]
    assert [allowed for allowed, _, _ in answers] == [True] * 160 + [False]
    assert [left for _, _, left in answers] == [*range(159, -1, -1), 0]
    assert answers[-1][1] == START + 60  # the first place leaves the window then
    assert len(counting.entries(item, "10.0.0.1")) == 160


def test_a_refused_client_is_answered_from_memory_until_a_place_may_free(
    redis_url: str, redis_prefix: str, traveller
) -> None:
    from limits import RateLimitItemPerSecond

    item = RateLimitItemPerSecond(2, 10)
    blocks, counting = _process(redis_url, redis_prefix, 10)
    assert [blocks.hit(item, "10.0.0.1")[0] for _ in range(3)] == [True, True, False]
    asked = counting.reservations
    assert [blocks.hit(item, "10.0.0.1")[0] for _ in range(50)] == [False] * 50
    assert counting.reservations == asked  # the flood never reached Redis
    traveller.shift(0.6)  # past the block lifetime (0.5 s): Redis is asked again
    assert blocks.hit(item, "10.0.0.1")[0] is False
    assert counting.reservations == asked + 1
    traveller.shift(10)
    assert blocks.hit(item, "10.0.0.1")[0] is True


def test_places_carry_the_end_of_their_blocks_life(
    redis_url: str, redis_prefix: str, traveller
) -> None:
    from limits import RateLimitItemPerSecond

    from membersense.ratelimit import block_lifetime

    item = RateLimitItemPerSecond(1000, 20)
    lifetime = block_lifetime(20)
    blocks, counting = _process(redis_url, redis_prefix, 20)
    used_at = []
    for _ in range(40):  # a block of several places, used over most of its life
        assert blocks.hit(item, "10.0.0.1")[0]
        used_at.append(time.time())
        traveller.shift(lifetime / 50)
    entries = sorted(counting.entries(item, "10.0.0.1"))
    assert len(entries) >= len(used_at)
    # Each request's place stays in the window for at least a window after the request.
    for used, entry in zip(sorted(used_at), entries[: len(used_at)], strict=True):
        assert entry >= used
    assert max(entries) <= max(used_at) + lifetime


def test_unused_places_are_given_back(redis_url: str, redis_prefix: str, traveller) -> None:
    from limits import RateLimitItemPerSecond

    item = RateLimitItemPerSecond(1000, 60)
    first, counting = _process(redis_url, redis_prefix, 60)
    second, _ = _process(redis_url, redis_prefix, 60)
    for _ in range(40):  # blocks of 1, 2, 4, 8, 16, 32: places left over in the last
        assert first.hit(item, "10.0.0.1")[0]
    assert len(counting.entries(item, "10.0.0.1")) > 40
    first.sweep()  # the block is still fresh: nothing to give back yet
    assert len(counting.entries(item, "10.0.0.1")) > 40
    traveller.shift(1.5)  # past the block lifetime (1 s)
    first.sweep()
    assert len(counting.entries(item, "10.0.0.1")) == 40
    # Another process sees exactly the 40 requests made.
    assert second.hit(item, "10.0.0.1") == (True, START + 60, 1000 - 41)


def test_two_processes_never_admit_more_than_the_limit_in_any_window(
    redis_url: str, redis_prefix: str, traveller
) -> None:
    import random

    from limits import RateLimitItemPerSecond

    limit, window = 50, 10
    item = RateLimitItemPerSecond(limit, window)
    processes = [_process(redis_url, redis_prefix, window)[0] for _ in range(2)]
    rng = random.Random(7)
    admitted: list[float] = []
    for step in range(600):  # 30 s in steps of 50 ms, bursts from both processes
        for blocks in processes:
            for _ in range(rng.choice((0, 0, 1, 3, 8))):
                if blocks.hit(item, "10.0.0.9")[0]:
                    admitted.append(time.time())
            if step % 10 == 0:
                blocks.sweep()
        traveller.shift(0.05)
    admitted.sort()
    busiest = max(sum(1 for t in admitted if start <= t < start + window) for start in admitted)
    assert busiest <= limit
    # ... and the budget is not wasted: near the limit in the busiest windows.
    assert busiest >= limit - 5
    assert len(admitted) >= 2.5 * limit


def test_near_the_limit_a_block_leaves_half_the_free_places_to_others(
    redis_url: str, redis_prefix: str, traveller
) -> None:
    from limits import RateLimitItemPerSecond

    item = RateLimitItemPerSecond(160, 60)
    window = _CountingWindow(redis_url, redis_prefix).inner
    key = window.key(item, "10.0.0.1")
    for _ in range(150):
        assert window.reserve(item, key, wanted=1, stamp=time.time()).taken == 1
    taken = [window.reserve(item, key, wanted=10, stamp=time.time()) for _ in range(6)]
    assert [t.taken for t in taken] == [5, 3, 1, 1, 0, 0]
    assert [t.remaining for t in taken] == [5, 2, 1, 0, 0, 0]


def test_a_closing_app_gives_back_the_places_it_holds(
    make_app: Callable[..., Flask], redis_url: str, redis_prefix: str, traveller
) -> None:
    from membersense import runtime_of

    config = {
        "RATE_LIMIT_MAX_REQUESTS": 1000,
        "RATE_LIMIT_STORAGE_URI": redis_url,
        "REDIS_KEY_PREFIX": redis_prefix,
    }
    app = make_app(**config)
    client = app.test_client()
    for _ in range(40):  # blocks of 1, 2, 4, 8, 16, 32: places left over in the last
        hit(client)
    budget = app.extensions["membersense.ratelimit"]
    window = budget.storage.get_connection()
    (key,) = window.keys(f"{redis_prefix}*")
    assert window.llen(key) > 40
    runtime_of(app).close()  # still fresh: a stopping process gives them back anyway
    assert window.llen(key) == 40
    assert hit(make_app(**config).test_client()).headers["RateLimit-Remaining"] == "959"


def test_threads_of_one_process_never_share_a_place(
    redis_url: str, redis_prefix: str, traveller
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from limits import RateLimitItemPerSecond

    item = RateLimitItemPerSecond(1000, 60)
    blocks, counting = _process(redis_url, redis_prefix, 60)

    def burst(_: int) -> list[tuple[bool, float, int]]:
        return [blocks.hit(item, "10.0.0.1") for _ in range(200)]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: races show
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = [answer for answers in pool.map(burst, range(8)) for answer in answers]
    finally:
        sys.setswitchinterval(interval)
    admitted = [left for allowed, _, left in answers if allowed]
    assert len(admitted) == 1000  # of 1 600 asked, exactly the limit
    assert sorted(admitted) == list(range(1000))  # each place's own Remaining: none twice
    blocks.close()
    assert len(counting.entries(item, "10.0.0.1")) == 1000
