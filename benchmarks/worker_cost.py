"""Benchmark: what MemberSense's worker costs against gunicorn's gthread, per request.

    .venv/bin/python -m benchmarks.worker_cost [--rounds 8] [--seconds 4]

The same MemberSense (10 000 members in the sandbox) is served twice side by
side: by ``gunicorn.conf.py`` as deployed (MemberSense's worker) and with
``-k gthread``. They are loaded alternately, round after round, with
``GET /_ah/health`` and a cached ``GET /api/members`` (gzip) at concurrency 16
(``wrk``, or ``benchmarks/loadgen.py`` without it), and for each round the
worker process's CPU time (``/proc/<pid>/stat``) is divided by the requests it
served. CPU per request resolves differences that throughput alone, on a
shared machine, does not. Medians are printed, with the ratio ours/gthread
(below 1: ours costs less).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import requests

from benchmarks.common import GunicornServer, Sandbox, median, worker_of

TOKEN = "bench-worker-cost-token"
PATHS = ("/_ah/health", "/api/members")
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def served(url: str, headers: dict[str, str], seconds: float, tool: str) -> int:
    """Requests answered in one round of load against *url*."""
    if tool == "wrk":
        header_args = [a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]
        out = subprocess.run(
            ["wrk", "-t1", "-c16", f"-d{seconds:g}s", *header_args, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    header_args = [a for k, v in headers.items() for a in ("--header", f"{k}: {v}")]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            url,
            "--connections",
            "16",
            "--seconds",
            str(seconds),
            *header_args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(re.search(r'"requests": (\d+)', out).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument(
        "--loadgen", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python"
    )
    args = parser.parse_args()
    env = {"RATE_LIMIT_MAX_REQUESTS": "100000000", "RATE_LIMIT_WINDOW": "1000"}
    with (
        Sandbox.without_cooldown(args.members, TOKEN) as sandbox,
        GunicornServer({**sandbox.env(), **env}) as ours,
        GunicornServer({**sandbox.env(), **env}, args=("-k", "gthread")) as stock,
    ):
        servers = {"ours": ours, "gthread": stock}
        headers, pids = {}, {}
        for name, server in servers.items():
            session = requests.post(
                f"{server.base_url}/api/auth/login", json={"token": TOKEN}, timeout=60
            ).json()["sessionId"]
            headers[name] = {"Authorization": session, "Accept-Encoding": "gzip"}
            requests.get(f"{server.base_url}/api/members", headers=headers[name], timeout=60)
            assert server.process is not None
            pids[name] = worker_of(server.process.pid)
        print(
            f"MemberSense's worker against gthread, {args.rounds} alternating rounds of "
            f"{args.seconds:g} s per path, concurrency 16, load generator {args.loadgen}"
        )
        for path in PATHS:
            cpu: dict[str, list[float]] = {name: [] for name in servers}
            rps: dict[str, list[float]] = {name: [] for name in servers}
            for round_ in range(args.rounds):
                order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                for name in order:
                    before = cpu_seconds(pids[name])
                    count = served(
                        servers[name].base_url + path, headers[name], args.seconds, args.loadgen
                    )
                    cpu[name].append((cpu_seconds(pids[name]) - before) / count * 1e6)
                    rps[name].append(count / args.seconds)
            figures = {name: (median(cpu[name]), median(rps[name])) for name in servers}
            for name, (us, throughput) in figures.items():
                print(f"  {path:<13} {name:<8} {us:7.0f} µs CPU/request   {throughput:7.0f} req/s")
            print(
                f"  {path:<13} ours/gthread: CPU per request "
                f"{figures['ours'][0] / figures['gthread'][0]:.2f}x, throughput "
                f"{figures['ours'][1] / figures['gthread'][1]:.2f}x"
            )


if __name__ == "__main__":
    main()
