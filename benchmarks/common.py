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
from collections.abc import Sequence
from pathlib import Path

from tests.integration.support import worker_pid as worker_of
from tests.servers import ROOT, GunicornServer

__all__ = ["ROOT", "GunicornServer", "Sandbox", "median", "percentile", "rss_kib", "worker_of"]


class Sandbox:
    """``python -m membersense.sandbox`` in a subprocess (so it does not share our GIL)."""

    def __init__(self, *args: str) -> None:
        self.args = ["--port", "0", *args]
        self.process: subprocess.Popen[str] | None = None
        self.api_url = self.gateway_url = self.base_url = ""

    def __enter__(self) -> Sandbox:
        self.process = subprocess.Popen([sys.executable, "-m", "membersense.sandbox", *self.args],
                                        cwd=ROOT, stdout=subprocess.PIPE, text=True)
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

    def env(self) -> dict[str, str]:
        """MemberSense settings pointing at this sandbox."""
        return {"DISCORD_API_BASE": self.api_url, "DISCORD_GATEWAY_URL": self.gateway_url}


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def rss_kib(pid: int) -> int:
    """Resident set size of *pid*, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
