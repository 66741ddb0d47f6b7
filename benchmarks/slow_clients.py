"""Benchmark: 200 slow or silent connections held open; health and cached members stay fast.

    .venv/bin/python -m benchmarks.slow_clients [--connections 200] [--seconds 20]
                                                [--worker membersense|gthread|both]

Target (issue 8): with 200 slow or silent connections held open, ``GET /_ah/health``
and a cached ``GET /api/members`` (10 000 members, gzip) answer in under 1 s (p99).

An attacker process keeps ``--connections`` connections open at all times, a
quarter of each kind: silent, trickling a head, trickling a Content-Length
body, trickling a chunked body (one byte per connection per second, far
under REQUEST_BODY_MIN_RATE); whenever the server cuts one off, it opens
another at once, as an attacker would. Meanwhile one keep-alive client sends
health checks and cached member-list requests one after the other and records
their latencies (a request that fails or takes longer than ``--timeout`` counts
as that long). MAX_CONNECTIONS_PER_IP is raised for the run, since every
connection comes from 127.0.0.1: the run measures the worker, not the cap.

With ``--worker gthread`` (or ``both``) the same runs against gunicorn's own
gthread worker, for comparison.
"""

from __future__ import annotations

import argparse
import multiprocessing
import selectors
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from benchmarks.common import GunicornServer, Sandbox, latency_line, percentile, probe

TOKEN = "bench-slow-clients-token"
TARGET_P99_S = 1.0
KINDS = {
    "silent": (b"", b""),
    "head": (b"GET /_ah/health HTTP/1.1\r\nHost: bench\r\nX-Slow: ", b"a"),
    "length body": (
        (b"POST /api/auth/login HTTP/1.1\r\nHost: bench\r\nContent-Length: 60000\r\n\r\n{"),
        b" ",
    ),
    "chunked body": (
        (
            b"POST /api/auth/login HTTP/1.1\r\nHost: bench\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nea60\r\n{"
        ),
        b" ",
    ),
}


def attack(url: str, connections: int, seconds: float, out: Any) -> None:
    """Hold *connections* slow connections open for *seconds*; put the cut-off counts in *out*."""
    parts = urlsplit(url)
    address = (parts.hostname, parts.port)
    selector = selectors.DefaultSelector()
    cut = {kind: 0 for kind in KINDS}
    kinds = [list(KINDS)[i % len(KINDS)] for i in range(connections)]

    def open_one(kind: str) -> None:
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(KINDS[kind][0])
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, kind)

    for kind in kinds:
        open_one(kind)
    deadline = time.monotonic() + seconds
    next_drip = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:  # cut off: come back at once
                selector.unregister(sock)
                sock.close()  # type: ignore[union-attr]
                cut[key.data] += 1
                open_one(key.data)
        if time.monotonic() >= next_drip:
            next_drip += 1.0
            for key in list(selector.get_map().values()):
                drip = KINDS[key.data][1]
                if drip:
                    try:
                        key.fileobj.send(drip)  # type: ignore[union-attr]
                    except OSError:
                        pass
    out.put(cut)
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]


def run(worker: str, sandbox: Sandbox, args: argparse.Namespace) -> bool:
    env = {
        **sandbox.env(),
        "RATE_LIMIT_MAX_REQUESTS": "100000000",
        "RATE_LIMIT_WINDOW": "1000",
        "MAX_CONNECTIONS_PER_IP": str(args.connections + 100),
    }
    extra = ("-k", "gthread") if worker == "gthread" else ()
    with GunicornServer(env, args=extra) as server:
        session = requests.post(
            f"{server.base_url}/api/auth/login", json={"token": TOKEN}, timeout=60
        ).json()["sessionId"]
        members_headers = {"Authorization": session, "Accept-Encoding": "gzip"}
        calls = [("/_ah/health", {}), ("/api/members", members_headers)]
        quiet = probe(server.base_url, calls, 3, args.timeout)  # also builds the member cache
        queue: Any = multiprocessing.Queue()
        attacker = multiprocessing.Process(
            target=attack, args=(server.base_url, args.connections, args.seconds + 3, queue)
        )
        attacker.start()
        time.sleep(2)  # every slow connection is open
        loaded = probe(server.base_url, calls, args.seconds, args.timeout)
        cut = queue.get()
        attacker.join()
    print(
        f"{worker} worker, {args.connections} slow connections held open "
        f"({', '.join(KINDS)}; cut off and reopened: {cut}):"
    )
    for path, samples in loaded.items():
        print(
            "  "
            + latency_line(path, samples, args.timeout)
            + f"   [quiet p99 {percentile(quiet[path], 99) * 1000:.1f} ms]"
        )
    ok = all(percentile(samples, 99) < TARGET_P99_S for samples in loaded.values())
    print(f"  target p99 < {TARGET_P99_S:g} s: {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--timeout", type=float, default=10, help="seconds a probe waits for an answer"
    )
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--worker", choices=("membersense", "gthread", "both"), default="both")
    args = parser.parse_args()
    workers = ("membersense", "gthread") if args.worker == "both" else (args.worker,)
    with Sandbox(
        "--members", str(args.members), "--token", TOKEN, "--channels", "3", "--messages", "1"
    ) as sandbox:
        for worker in workers:
            run(worker, sandbox, args)


if __name__ == "__main__":
    main()
