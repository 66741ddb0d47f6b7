"""Benchmark: memory mode (one worker) and Redis mode (workers = cores), each beside its floor.

    .venv/bin/python -m benchmarks.modes [--seconds S] [--rounds R] [--members N]

For each mode, MemberSense and the floor (``benchmarks/floor_app.py``: a bare WSGI app
answering the same bytes) run under the same gunicorn settings, as deployed — memory mode:
one worker; Redis mode: ``WEB_CONCURRENCY`` = the CPUs this process may use; ``THREADS`` at
its default (32) — and ``wrk`` (or ``benchmarks/loadgen.py``) loads ``GET /_ah/health`` and ``GET
/api/members`` (10 000 members, gzip, a logged-in session) alternately, *R* rounds of *S*
seconds. Redis mode uses the Redis on 127.0.0.1:6379 under a key prefix of its own.

Target (issue 9), Redis mode with workers = cores: members and health each at least 0.6x the
floor's throughput with the same worker count. The ratio is the median over rounds of each
round's MemberSense/floor pair, measured back to back. Memory mode's ratios are printed
beside them.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import requests

from benchmarks.common import GunicornServer, Sandbox, cpu_count, median
from benchmarks.members_throughput import load
from tests.redis_support import SHARED_URL, delete_prefix, new_prefix
from tests.servers import wait_for_health

TOKEN = "bench-modes-token"
TARGET_RATIO = 0.6


def _rounds(
    servers: dict[str, GunicornServer],
    path: str,
    headers: dict[str, str],
    seconds: float,
    rounds: int,
    tool: str,
) -> dict[str, float]:
    for server in servers.values():
        load(f"{server.base_url}{path}", headers, 2, tool)  # warm up
    results: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, server in servers.items():
            results[name].append(load(f"{server.base_url}{path}", headers, seconds, tool)["rps"])
    figures = {name: median(values) for name, values in results.items()}
    # Each round's two figures were measured back to back: their ratio is spared the
    # machine's drift between rounds, which moves both by 10-20 % on a shared VM.
    ratios = [
        ours / floor for ours, floor in zip(results["membersense"], results["floor"], strict=True)
    ]
    figures.update(ratio=median(ratios), lowest=min(ratios), highest=max(ratios))
    return figures


def measure(
    mode: str, sandbox: Sandbox, tmp: Path, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Requests per second of MemberSense and its floor, for health and members."""
    env = {
        **sandbox.env(),
        "RATE_LIMIT_MAX_REQUESTS": "100000000",
        "RATE_LIMIT_WINDOW": "1000",
        "LOG_LEVEL": "INFO",
        "MAX_SESSIONS_PER_TOKEN": "1000",
        "MAX_SESSIONS_PER_IP": "1000",
    }
    prefix = new_prefix()
    if mode == "redis":
        env.update(
            REDIS_URL=SHARED_URL,
            SESSION_SECRET="b" * 40,
            REDIS_KEY_PREFIX=prefix,
            WEB_CONCURRENCY=str(cpu_count()),
        )
    try:
        with GunicornServer(env) as app:
            session = requests.post(
                f"{app.base_url}/api/auth/login", json={"token": TOKEN}, timeout=60
            ).json()["sessionId"]
            headers = {"Authorization": session, "Accept-Encoding": "gzip"}
            first = requests.get(
                f"{app.base_url}/api/members", headers=headers, timeout=60, stream=True
            )
            first.raise_for_status()
            body = tmp / f"{mode}.body"
            body.write_bytes(first.raw.read(decode_content=False))
            time.sleep(1)  # every worker has seen the session and the published list
            floor_env = {
                **env,
                "MEMBERSENSE_FLOOR_BODY": str(body),
                "MEMBERSENSE_FLOOR_ENCODING": first.headers.get("Content-Encoding", ""),
            }
            with GunicornServer(floor_env, args=("benchmarks.floor_app:app",)) as floor:
                wait_for_health(floor.base_url)
                servers = {"membersense": app, "floor": floor}
                return {
                    "health": _rounds(
                        servers, "/_ah/health", {}, args.seconds, args.rounds, args.loadgen
                    ),
                    "members": _rounds(
                        servers, "/api/members", headers, args.seconds, args.rounds, args.loadgen
                    ),
                }
    finally:
        if mode == "redis":
            delete_prefix(SHARED_URL, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--loadgen", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        Sandbox(
            "--members", str(args.members), "--token", TOKEN, "--channels", "3", "--messages", "1"
        ) as sandbox,
    ):
        results = {mode: measure(mode, sandbox, Path(tmp), args) for mode in ("memory", "redis")}
    print(
        f"{args.members} members (gzip) and health, median of {args.rounds} x {args.seconds:g} s,"
        f" load generator {args.loadgen}, {cpu_count()} CPUs"
    )
    for mode, label in (
        ("memory", "memory mode, 1 worker"),
        ("redis", f"Redis mode, {cpu_count()} workers"),
    ):
        print(f"  {label}:")
        for path, figures in results[mode].items():
            ratio = figures["ratio"]
            verdict = (
                ""
                if mode == "memory"
                else (
                    f"; target >= {TARGET_RATIO:g}x -> {'PASS' if ratio >= TARGET_RATIO else 'FAIL'}"
                )
            )
            print(
                f"    {path:<8} MemberSense {figures['membersense']:7.0f} req/s, floor "
                f"{figures['floor']:7.0f} req/s (medians); paired rounds: {ratio:.2f}x"
                f" ({figures['lowest']:.2f}-{figures['highest']:.2f}){verdict}"
            )


if __name__ == "__main__":
    main()
