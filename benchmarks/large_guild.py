"""Benchmark: a 100 000-member guild (targets: login <= 1.5 s, login + first members <= 3 s,
worker RSS <= 180 MB, re-login right after logout <= 1 s).

    .venv/bin/python -m benchmarks.large_guild [--members N] [--rounds R]

A sandbox in its own process (member-request cooldown 0, so every cold login may load
the list) and MemberSense under gunicorn with ``CONNECTION_LINGER=0``, so each round is
a cold login: token check, IDENTIFY, READY, GUILD_CREATE and every member chunk. Each
round times the login, then the first ``GET /api/members`` (gzip, as browsers ask),
which may wait for the snapshot being built, then logs out. The worker's RSS is read
after the last round's members answer. A second server with the default linger times
re-logins right after a logout.
"""

from __future__ import annotations

import argparse
import time

import requests

from benchmarks.common import GunicornServer, Sandbox, median, rss_kib, worker_of

TOKEN = "bench-large-token"
TARGETS = {"login": 1.5, "login+members": 3.0, "rss_mb": 180.0, "relogin": 1.0}


def _login(http: requests.Session, base: str) -> tuple[str, float]:
    started = time.perf_counter()
    response = http.post(f"{base}/api/auth/login", json={"token": TOKEN}, timeout=120)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return response.json()["sessionId"], elapsed


def _members(http: requests.Session, base: str, session: str) -> tuple[int, float]:
    started = time.perf_counter()
    response = http.get(
        f"{base}/api/members",
        headers={"Authorization": session, "Accept-Encoding": "gzip"},
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return len(response.json()), elapsed


def _verdict(name: str, value: float) -> str:
    return "PASS" if value <= TARGETS[name] else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    env = {
        "RATE_LIMIT_MAX_REQUESTS": "100000",
        "LOG_LEVEL": "WARNING",
        "LOGIN_TIMEOUT": "60000",
        "DISCORD_TIMEOUT": "30000",
    }

    with Sandbox.without_cooldown(args.members, TOKEN) as sandbox:
        logins, totals, members_s = [], [], []
        with (
            GunicornServer({**sandbox.env(), **env, "CONNECTION_LINGER": "0"}) as server,
            requests.Session() as http,
        ):
            assert server.process is not None
            worker = worker_of(server.process.pid)
            count = 0
            for _ in range(args.rounds + 1):
                session, login_s = _login(http, server.base_url)
                count, first_s = _members(http, server.base_url, session)
                logins.append(login_s)
                members_s.append(first_s)
                totals.append(login_s + first_s)
                rss_mb = rss_kib(worker) / 1024
                http.post(
                    f"{server.base_url}/api/auth/logout",
                    headers={"Authorization": session},
                    timeout=30,
                )
                time.sleep(0.5)  # let the connection close before the next cold login
        # The first round also imports discord.py and starts the loop thread.
        logins, totals, members_s = logins[1:], totals[1:], members_s[1:]

        relogins = []
        with GunicornServer({**sandbox.env(), **env}) as server, requests.Session() as http:
            session, _ = _login(http, server.base_url)
            _members(http, server.base_url, session)
            for _ in range(args.rounds):
                http.post(
                    f"{server.base_url}/api/auth/logout",
                    headers={"Authorization": session},
                    timeout=30,
                )
                session, relogin_s = _login(http, server.base_url)
                relogins.append(relogin_s)

    login_p50, total_p50 = median(logins), median(totals)
    relogin_p50 = median(relogins)
    print(f"{count} members, {args.rounds} cold logins:")
    print(
        f"  login            p50 {login_p50:.2f} s (min {min(logins):.2f}, max {max(logins):.2f})"
        f"; target <= {TARGETS['login']} s -> {_verdict('login', login_p50)}"
    )
    print(f"  first members    p50 {median(members_s):.2f} s (max {max(members_s):.2f})")
    print(
        f"  login + members  p50 {total_p50:.2f} s (max {max(totals):.2f})"
        f"; target <= {TARGETS['login+members']} s -> {_verdict('login+members', total_p50)}"
    )
    print(
        f"  worker RSS       {rss_mb:.0f} MB after {args.rounds + 1} rounds"
        f"; target <= {TARGETS['rss_mb']:.0f} MB -> {_verdict('rss_mb', rss_mb)}"
    )
    print(
        f"  re-login         p50 {relogin_p50 * 1000:.0f} ms (max {max(relogins) * 1000:.0f})"
        f"; target <= {TARGETS['relogin']} s -> {_verdict('relogin', relogin_p50)}"
    )


if __name__ == "__main__":
    main()
