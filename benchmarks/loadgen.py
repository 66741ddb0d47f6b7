"""A small closed-loop HTTP load generator (used when ``wrk`` is not installed).

``python -m benchmarks.loadgen URL --connections 16 --seconds 10 --header 'K: V'``
runs one process per CPU, each with its share of keep-alive connections on
threads, and prints one JSON line: requests, seconds, rps, p50_ms, p99_ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import threading
import time
from urllib.parse import urlsplit


def _worker(
    url: str, connections: int, seconds: float, headers: dict[str, str], out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def run() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(latencies)


def run(url: str, connections: int, seconds: float, headers: dict[str, str]) -> dict[str, float]:
    """Load *url* with *connections* keep-alive connections for *seconds*; return the figures."""
    processes = max(1, min(len(os.sched_getaffinity(0)), connections))
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    workers = [
        multiprocessing.Process(target=_worker, args=(url, n, seconds, headers, queue))
        for n in shares
    ]
    for worker in workers:
        worker.start()
    latencies = sorted(x for _ in workers for x in queue.get())
    for worker in workers:
        worker.join()
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    print(json.dumps(run(args.url, args.connections, args.seconds, headers)))


if __name__ == "__main__":
    main()
