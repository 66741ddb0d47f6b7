"""Benchmark: Discord answers history reads after 15 s, 50 readers wait on it; the rest stays fast.

    .venv/bin/python -m benchmarks.slow_discord [--readers 50] [--delay-ms 15000] [--seconds 20]
                                                [--compare]

Target (issue 8): with the sandbox delaying ``/channels/*`` by 15 s and 50
parallel ``GET /api/messages``, ``GET /_ah/health`` and a cached
``GET /api/members`` (10 000 members, gzip) answer in under 100 ms (p99).

A reader process keeps ``--readers`` history reads in flight: each reader
sends one, and when it is answered (a 503 past the bulkhead, a 504 when
``DISCORD_TIMEOUT`` ends a stuck one) sends the next, after the
``Retry-After`` it was given, as a well-behaved client does. Meanwhile one
keep-alive client sends health checks and cached member-list requests one
after the other and records their latencies. Every client comes from
127.0.0.1, so the per-address limits (rate, connections) are raised for the
run: it measures the bulkhead, not them.

``--compare`` runs it again with ``MAX_CONCURRENT_HISTORY_READS`` equal to
``THREADS``: no bulkhead, as before issue 8.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import threading
import time
from typing import Any

import requests

from benchmarks.common import GunicornServer, Sandbox, latency_line, percentile, probe

TOKEN = "bench-slow-discord-token"
TARGET_P99_S = 0.1
THREADS = 8


def readers(url: str, headers: dict[str, str], count: int, seconds: float, out: Any) -> None:
    """Keep *count* history reads in flight for *seconds*; put the statuses seen in *out*."""
    statuses: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def read() -> None:
        with requests.Session() as http:
            while time.monotonic() < deadline:
                try:
                    response = http.get(url, headers=headers, timeout=60)
                except requests.RequestException:
                    continue
                with lock:
                    statuses[response.status_code] += 1
                time.sleep(float(response.headers.get("Retry-After", "0")))

    threads = [threading.Thread(target=read, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    out.put(dict(statuses))


def run(label: str, env: dict[str, str], sandbox: Sandbox, args: argparse.Namespace) -> bool:
    with GunicornServer(env) as server:
        session = requests.post(
            f"{server.base_url}/api/auth/login", json={"token": TOKEN}, timeout=60
        ).json()["sessionId"]
        headers = {"Authorization": session}
        channel = requests.get(
            f"{server.base_url}/api/channels", headers=headers, timeout=30
        ).json()[0]["id"]
        calls = [("/_ah/health", {}), ("/api/members", {**headers, "Accept-Encoding": "gzip"})]
        quiet = probe(server.base_url, calls, 3, args.timeout)  # also builds the member cache
        requests.post(
            f"{sandbox.base_url}/_sandbox/faults",
            timeout=10,
            json={"count": 1_000_000, "path": "/channels/*", "delay_ms": args.delay_ms},
        )
        queue: Any = multiprocessing.Queue()
        reader = multiprocessing.Process(
            target=readers,
            args=(
                f"{server.base_url}/api/messages?channelId={channel}",
                headers,
                args.readers,
                args.seconds + 2,
                queue,
            ),
        )
        reader.start()
        try:
            time.sleep(2)  # every reader has sent its first read
            loaded = probe(server.base_url, calls, args.seconds, args.timeout)
            statuses = queue.get(timeout=args.seconds + 120)
            reader.join()
        finally:
            requests.post(f"{sandbox.base_url}/_sandbox/faults", json={"count": 0}, timeout=10)
    print(
        f"{label}: {args.readers} history readers against a {args.delay_ms / 1000:g} s Discord "
        f"delay (history answers by status: {dict(sorted(statuses.items()))})"
    )
    for path, samples in loaded.items():
        print(
            "  "
            + latency_line(path, samples, args.timeout)
            + f"   [quiet p99 {percentile(quiet[path], 99) * 1000:.1f} ms]"
        )
    ok = all(percentile(samples, 99) < TARGET_P99_S for samples in loaded.values())
    print(f"  target p99 < {TARGET_P99_S * 1000:g} ms: {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--delay-ms", type=int, default=15_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--timeout", type=float, default=20, help="seconds a probe waits for an answer"
    )
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run again without the bulkhead (its share = THREADS)",
    )
    args = parser.parse_args()
    with Sandbox(
        "--members", str(args.members), "--token", TOKEN, "--channels", "3", "--messages", "50"
    ) as sandbox:
        # Readers and probe all come from 127.0.0.1: lift the per-address caps
        # (connections, rate) that would otherwise refuse the probe itself.
        env = {
            **sandbox.env(),
            "RATE_LIMIT_MAX_REQUESTS": "100000000",
            "RATE_LIMIT_WINDOW": "1000",
            "THREADS": str(THREADS),
            "MAX_CONNECTIONS_PER_IP": str(args.readers + 100),
        }
        run(
            f"bulkhead (history share {max(1, THREADS // 4)} of {THREADS} threads)",
            env,
            sandbox,
            args,
        )
        if args.compare:
            run(
                "no bulkhead (history share = THREADS)",
                {**env, "MAX_CONCURRENT_HISTORY_READS": str(THREADS)},
                sandbox,
                args,
            )


if __name__ == "__main__":
    main()
