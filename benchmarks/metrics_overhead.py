"""Benchmark: what metrics add to a cached ``GET /api/members``, measured in one process.

    .venv/bin/python -m benchmarks.metrics_overhead [--requests N] [--rounds R]

Two apps in this process, one with ``METRICS_PUBLIC=1`` (every request counted
and timed) and one without, serve a cached member list (a prebuilt 10 000-member
document, gzip, as the real cache hands it out) through their WSGI callables,
alternately, *R* rounds of *N* requests each: no sockets, no load generator, so
the difference is the metrics hook itself. prometheus-client runs in
multiprocess mode, as under gunicorn (each observation is a locked write to a
memory-mapped file). Printed: the median and the fastest round of each, and the
median of the on/off ratios of neighbouring rounds (the two ran a moment apart,
so a shared machine's changing load cancels out).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from werkzeug.test import EnvironBuilder

from membersense import create_app, extensions
from membersense.discord.service import GuildSummary, JsonDocument

MEMBERS = 10_000


class _CachedService:
    """A logged-in bot whose member list is already built, as after the first read."""

    def __init__(self, document: JsonDocument) -> None:
        self._document = document
        self.failed = False

    def guilds(self) -> list[GuildSummary]:
        return [GuildSummary("1", "Bench", MEMBERS, None)]

    def members(
        self, guild_id: int | None, *, limit: int | None = None, after: int | None = None
    ) -> JsonDocument:
        return self._document

    def close(self) -> None:
        pass


class _Connector:
    def __init__(self, document: JsonDocument) -> None:
        self._document = document

    def connect(self, token: str) -> _CachedService:
        return _CachedService(self._document)

    def close(self) -> None:
        pass


def _document() -> JsonDocument:
    members = [
        {
            "id": str(10**17 + i),
            "username": f"user{i}",
            "displayName": f"User {i}",
            "avatar": "https://cdn.discordapp.com/embed/avatars/0.png",
            "roles": ["Member", "@everyone"],
            "role": "Member",
            "joinedAt": "2024-07-21T07:59:32.041Z",
            "bot": False,
        }
        for i in range(MEMBERS)
    ]
    body = json.dumps(members, separators=(",", ":")).encode()
    return JsonDocument(body, "bench", gzip.compress(body))


def _client(app: Any) -> Callable[[int], float]:
    login = EnvironBuilder(
        path="/api/auth/login", method="POST", json={"token": "bench-token"}
    ).get_environ()
    body = b"".join(app(login, lambda *a: None))
    session = json.loads(body)["sessionId"]
    environ = EnvironBuilder(
        path="/api/members", headers={"Authorization": session, "Accept-Encoding": "gzip"}
    ).get_environ()

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    def run(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            result = app(dict(environ), start_response)
            for _chunk in result:
                pass
            result.close()
        return (time.perf_counter() - started) / n * 1e6

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    # Before the first metric is used: prometheus-client picks its mode when first imported
    # (membersense.metrics imports it then, not before).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="membersense-bench-")
    with open(os.devnull, "w") as sink:
        try:
            _measure(args, sink)
        finally:
            extensions.shutdown()  # while the log stream is open


def _measure(args: argparse.Namespace, sink: Any) -> None:
    document = _document()
    config = {
        "DISCORD_CONNECTOR": _Connector(document),
        "LOG_STREAM": sink,
        "RATE_LIMIT_MAX_REQUESTS": 10**9,
        "RATE_LIMIT_WINDOW": 1000,
    }
    runs = {
        "metrics off": _client(create_app(config)),
        "metrics on": _client(create_app({**config, "METRICS_PUBLIC": "1"})),
    }
    for run in runs.values():
        run(200)  # warm up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(run(args.requests))
    off, on = times["metrics off"], times["metrics on"]
    ratio = statistics.median(b / a for a, b in zip(off, on, strict=True))
    print(
        f"cached GET /api/members ({MEMBERS} members, gzip) through the WSGI app, in process, "
        f"multiprocess metrics; {args.rounds} x {args.requests} requests each, alternating"
    )
    for name, values in times.items():
        print(
            f"  {name:<11} median {statistics.median(values):7.1f} µs/request, "
            f"fastest round {min(values):7.1f} µs"
        )
    print(
        f"  metrics on / off, median of neighbouring rounds: {ratio:.3f}x; fastest rounds "
        f"{min(on) / min(off):.3f}x (+{min(on) - min(off):.1f} µs)"
    )


if __name__ == "__main__":
    main()
