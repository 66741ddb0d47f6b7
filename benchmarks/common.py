"""Shared pieces of the benchmarks: a sandbox in its own process, MemberSense under
gunicorn (``tests.servers.GunicornServer``, as deployed) and small statistics.

Run every benchmark from the repository root, e.g. ``.venv/bin/python -m benchmarks.bridge_overhead``.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from tests.integration.support import worker_pid as worker_of
from tests.servers import ROOT, GunicornServer

__all__ = [
    "ROOT",
    "GunicornServer",
    "Sandbox",
    "latency_line",
    "median",
    "percentile",
    "probe",
    "rss_kib",
    "worker_of",
]


class Sandbox:
    """``python -m membersense.sandbox`` in a subprocess (so it does not share our GIL)."""

    def __init__(self, *args: str) -> None:
        self.args = ["--port", "0", *args]
        self.process: subprocess.Popen[str] | None = None
        self.api_url = self.gateway_url = self.base_url = ""

    def __enter__(self) -> Self:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "membersense.sandbox", *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"api=(\S+) gateway=(\S+)", line)
        if not found:
            self.__exit__()
            raise RuntimeError(f"sandbox did not start: {line!r}")
        self.api_url, self.gateway_url = found.group(1), found.group(2)
        self.base_url = self.api_url.split("/api/")[0]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            if self.process.stdout:
                self.process.stdout.close()

    @classmethod
    def without_cooldown(cls, members: int, token: str) -> Self:
        """A guild of *members* for one bot, three channels of one message each, and no
        member-request cooldown: every cold login may load the whole list."""
        return cls(
            *("--members", str(members), "--token", token, "--channels", "3", "--messages", "1"),
            *("--member-request-cooldown", "0"),
        )

    def env(self) -> dict[str, str]:
        """MemberSense settings pointing at this sandbox."""
        return {"DISCORD_API_BASE": self.api_url, "DISCORD_GATEWAY_URL": self.gateway_url}


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def probe(
    base_url: str, calls: Sequence[tuple[str, dict[str, str]]], seconds: float, timeout: float
) -> dict[str, list[float]]:
    """Send *calls* (path, headers) one after the other, round and round, for *seconds*.

    Returns each path's latencies in seconds. A request that failed (no 200
    or 304, or no answer within *timeout*) counts as *timeout*: the client got
    nothing useful in that time.
    A single keep-alive connection, as a load balancer's health checker uses.
    """
    import requests

    latencies: dict[str, list[float]] = {path: [] for path, _ in calls}
    deadline = time.monotonic() + seconds
    with requests.Session() as http:
        while time.monotonic() < deadline:
            for path, headers in calls:
                started = time.perf_counter()
                try:
                    # The body as sent: decompressing 3 MB of members is the client's
                    # time, not the server's.
                    response = http.get(
                        base_url + path, headers=headers, timeout=timeout, stream=True
                    )
                    response.raw.read(decode_content=False)
                    ok = response.status_code in (200, 304)
                except requests.RequestException:
                    ok = False
                    http.close()
                elapsed = time.perf_counter() - started
                latencies[path].append(elapsed if ok else max(elapsed, timeout))
    return latencies


def latency_line(path: str, samples: Sequence[float], timeout: float) -> str:
    """p50, p99 and max of *samples* (seconds) in ms, and how many failed (see :func:`probe`)."""
    failed = sum(1 for sample in samples if sample >= timeout)
    return (
        f"{path:<14} p50 {median(samples) * 1000:8.1f} ms   "
        f"p99 {percentile(samples, 99) * 1000:8.1f} ms   max {max(samples) * 1000:8.1f} ms   "
        f"({len(samples)} requests, {failed} failed or timed out)"
    )


def rss_kib(pid: int) -> int:
    """Resident set size of *pid*, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
