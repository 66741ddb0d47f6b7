"""Benchmark: ``GET /api/members`` of a 10 000-member guild, and ``GET /_ah/health``, at concurrency 16.

    .venv/bin/python -m benchmarks.members_throughput [--seconds S] [--rounds R] [--loadgen wrk|python]
                                                      [--path /api/members --path /_ah/health]

Targets: p50 <= 10 ms, >= 1 000 req/s, and within 2x of the floor: the same
gunicorn (``gunicorn.conf.py``, one gthread worker, THREADS=8) serving the same
bytes from memory (``benchmarks/floor_app.py``).

A third server, "bare flask", serves the same bytes from a Flask view with no
extensions: it splits the gap into Flask's own cost and MemberSense's.

MemberSense runs with metrics on (``METRICS_TOKEN`` set: every request counted and
timed, prometheus-client's multiprocess mode as under gunicorn), as issue 8's
cost rule asks; "without metrics" is the same server with them off, so the pair
says what metrics cost a request.

The same pair also runs on gunicorn's own gthread worker (``-k gthread``), to
show what MemberSense's worker (slow-client protection) costs, if anything.

A sandbox runs in its own process; MemberSense logs in, the member list is
read once (building the snapshot), then MemberSense and the floors are loaded
alternately, *R* rounds of *S* seconds each, by ``wrk`` (``-t2 -c16 --latency``)
or, without wrk, by ``benchmarks/loadgen.py`` (a Python closed loop in other
processes). Every request is a full 200 with the whole body (no If-None-Match),
sent with ``Accept-Encoding: gzip`` as browsers send it (``--encoding identity``
for the uncompressed 2.9 MB body); the floor serves exactly the bytes
MemberSense put on the wire, with the same encoding.
Medians over the rounds are printed, with the ratios. Issue 8's cost rule is the
throughput ratio MemberSense/floor of each path (0.41x for health and 0.40x for
members when it was filed): hardening must not lower it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from benchmarks.common import GunicornServer, Sandbox, median
from tests.servers import wait_for_health

TOKEN = "bench-members-token"
CONNECTIONS = 16
TARGET_P50_MS, TARGET_RPS, TARGET_RATIO = 10.0, 1000.0, 2.0
#: MemberSense/floor throughput when issue 8 was filed: hardening must keep at least these.
ISSUE8_RATIOS = {"/_ah/health": 0.41, "/api/members": 0.40}
PATHS = ("/api/members", "/_ah/health")
METRICS_TOKEN = "benchmark-metrics-token"


def _wrk_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def load(url: str, headers: dict[str, str], seconds: float, tool: str) -> dict[str, float]:
    """One round against *url*: requests per second and latency percentiles."""
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    if tool == "wrk":
        out = subprocess.run(
            ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", *header_args, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if "Non-2xx" in out:
            raise RuntimeError(f"errors during the run:\n{out}")
        latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
        return {
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50_ms": _wrk_ms(latency["50"]),
            "p99_ms": _wrk_ms(latency["99"]),
        }
    header_args = [
        arg for name, value in headers.items() for arg in ("--header", f"{name}: {value}")
    ]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            url,
            "--connections",
            str(CONNECTIONS),
            "--seconds",
            str(seconds),
            *header_args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--loadgen", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python"
    )
    parser.add_argument(
        "--encoding",
        choices=("gzip", "identity"),
        default="gzip",
        help="Accept-Encoding of the load (browsers send gzip)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="MemberSense's LOG_LEVEL (INFO logs every request, as deployed)",
    )
    parser.add_argument(
        "--path", action="append", choices=PATHS, help="path to load (repeatable; default: both)"
    )
    args = parser.parse_args()
    paths = tuple(args.path or PATHS)

    # The limiter stays on, with a budget no run can exhaust. A 1 s window keeps
    # the moving window at about the size a real client's has (limits keeps one
    # timestamp per request in the window; 60 s at this rate would be 60 000).
    env = {
        "RATE_LIMIT_MAX_REQUESTS": "100000000",
        "RATE_LIMIT_WINDOW": "1000",
        "LOG_LEVEL": args.log_level,
    }
    metrics_on = {"METRICS_TOKEN": METRICS_TOKEN}
    # gunicorn's own gthread worker instead of MemberSense's (the command line wins
    # over gunicorn.conf.py): what the slow-client protection costs, if anything.
    stock = ("-k", "gthread")
    with (
        tempfile.TemporaryDirectory() as tmp,
        Sandbox.without_cooldown(args.members, TOKEN) as sandbox,
        GunicornServer({**sandbox.env(), **env, **metrics_on}) as app,
        GunicornServer({**sandbox.env(), **env}) as without_metrics,
        GunicornServer({**sandbox.env(), **env, **metrics_on}, args=stock) as stock_app,
    ):
        headers = _logged_in(app, args.encoding)
        first = requests.get(
            f"{app.base_url}/api/members", headers=headers, timeout=60, stream=True
        )
        first.raise_for_status()
        sent = first.raw.read(decode_content=False)  # the bytes on the wire
        body = Path(tmp) / "members.body"
        body.write_bytes(sent)
        floor_env = {**env, "MEMBERSENSE_FLOOR_BODY": str(body)}
        if first.headers.get("Content-Encoding"):
            floor_env["MEMBERSENSE_FLOOR_ENCODING"] = first.headers["Content-Encoding"]
        members = requests.get(f"{app.base_url}/api/members", headers=headers, timeout=60).json()
        floor = GunicornServer(floor_env, args=("benchmarks.floor_app:app",))
        bare_flask = GunicornServer(floor_env, args=("benchmarks.floor_app:flask_app",))
        stock_floor = GunicornServer(floor_env, args=(*stock, "benchmarks.floor_app:app"))
        with floor, bare_flask, stock_floor:
            servers = {
                "membersense": (app, headers),
                "floor": (floor, headers),
                "bare flask": (bare_flask, headers),
                "without metrics": (without_metrics, _logged_in(without_metrics, args.encoding)),
                "membersense on gthread": (stock_app, _logged_in(stock_app, args.encoding)),
                "floor on gthread": (stock_floor, headers),
            }
            for server, server_headers in servers.values():
                wait_for_health(server.base_url)
                check = requests.get(
                    f"{server.base_url}/api/members",
                    headers=server_headers,
                    timeout=60,
                    stream=True,
                )
                assert check.raw.read(decode_content=False) == sent
            results: dict[str, dict[str, list[dict[str, float]]]] = {
                path: {name: [] for name in servers} for path in paths
            }
            for path in paths:
                for server, server_headers in servers.values():
                    load(f"{server.base_url}{path}", server_headers, 2, args.loadgen)  # warm up
            for _ in range(args.rounds):
                for path in paths:
                    for name, (server, server_headers) in servers.items():
                        results[path][name].append(
                            load(
                                f"{server.base_url}{path}",
                                server_headers,
                                args.seconds,
                                args.loadgen,
                            )
                        )
            scraped = requests.get(
                f"{app.base_url}/metrics",
                timeout=10,
                headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            ).text
            assert 'route="/api/members"' in scraped  # the requests were counted
    print(
        f"{len(members)} members, {len(sent) / 1e6:.2f} MB body "
        f"(Accept-Encoding: {args.encoding}), concurrency {CONNECTIONS}, "
        f"load generator {args.loadgen}, "
        f"median of {args.rounds} x {args.seconds:g} s rounds, LOG_LEVEL={args.log_level}"
    )
    for path in paths:
        _report(path, results[path])


def _logged_in(server: GunicornServer, encoding: str) -> dict[str, str]:
    """Headers of a request with a fresh session on *server*."""
    session = requests.post(
        f"{server.base_url}/api/auth/login", json={"token": TOKEN}, timeout=60
    ).json()["sessionId"]
    return {"Authorization": session, "Accept-Encoding": encoding}


def _report(path: str, results: dict[str, list[dict[str, float]]]) -> None:
    summary = {
        name: {key: median([r[key] for r in runs]) for key in ("rps", "p50_ms", "p99_ms")}
        for name, runs in results.items()
    }
    ms, fl, bare = summary["membersense"], summary["floor"], summary["bare flask"]
    print(f"GET {path}")
    for name, figures in summary.items():
        print(
            f"  {name:<22} {figures['rps']:8.0f} req/s   p50 {figures['p50_ms']:6.2f} ms   "
            f"p99 {figures['p99_ms']:6.2f} ms"
        )
    share = ms["rps"] / fl["rps"]
    print(
        f"  membersense/floor throughput {share:.2f}x (issue 8: keep >= {ISSUE8_RATIOS[path]:.2f}x "
        f"{'PASS' if share >= ISSUE8_RATIOS[path] else 'FAIL'})"
    )
    stock_ms, stock_fl = summary["membersense on gthread"], summary["floor on gthread"]
    print(
        f"  on gunicorn's gthread worker: membersense/floor {stock_ms['rps'] / stock_fl['rps']:.2f}x; "
        f"MemberSense's worker/gthread: membersense {ms['rps'] / stock_ms['rps']:.2f}x, "
        f"floor {fl['rps'] / stock_fl['rps']:.2f}x"
    )
    print(
        f"  of which Flask itself: floor/bare flask {fl['rps'] / bare['rps']:.2f}x; "
        f"MemberSense's own: bare flask/membersense {bare['rps'] / ms['rps']:.2f}x"
    )
    off = summary["without metrics"]
    print(
        f"  metrics on: {ms['rps'] / off['rps']:.3f}x the throughput of metrics off, "
        f"p50 {ms['p50_ms'] / off['p50_ms']:.3f}x"
    )
    if path != "/api/members":
        return
    ratio_rps = fl["rps"] / ms["rps"]
    ratio_p50 = ms["p50_ms"] / fl["p50_ms"]
    print(
        f"  floor/membersense throughput {ratio_rps:.2f}x, p50 {ratio_p50:.2f}x "
        f"(target <= {TARGET_RATIO:g}x)"
    )
    verdict = (
        ms["p50_ms"] <= TARGET_P50_MS,
        ms["rps"] >= TARGET_RPS,
        max(ratio_rps, ratio_p50) <= TARGET_RATIO,
    )
    print(
        f"  targets: p50 <= {TARGET_P50_MS:g} ms {'PASS' if verdict[0] else 'FAIL'}, "
        f">= {TARGET_RPS:g} req/s {'PASS' if verdict[1] else 'FAIL'}, "
        f"within {TARGET_RATIO:g}x of the floor {'PASS' if verdict[2] else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
