"""Benchmark: login to ready for a 10 000-member guild (target: <= 1 s).

    .venv/bin/python -m benchmarks.login_ready [--members N] [--rounds R]

A sandbox (own process, member-request cooldown 0 so every round may chunk)
and MemberSense under gunicorn; each round is ``POST /api/auth/login`` (token
check over REST, gateway IDENTIFY, READY, GUILD_CREATE, all member chunks)
then logout, which closes the connection (``CONNECTION_LINGER=0``: by default it would
stay a minute for a quick re-login), so every round is a cold login.
"""

from __future__ import annotations

import argparse
import time

import requests

from benchmarks.common import GunicornServer, Sandbox, median, percentile

TARGET_S = 1.0
TOKEN = "bench-login-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    with (
        Sandbox.without_cooldown(args.members, TOKEN) as sandbox,
        GunicornServer(
            {
                **sandbox.env(),
                "RATE_LIMIT_MAX_REQUESTS": "100000",
                "LOG_LEVEL": "WARNING",
                "CONNECTION_LINGER": "0",
            }
        ) as server,
        requests.Session() as http,
    ):
        samples = []
        for _ in range(args.rounds + 1):
            started = time.perf_counter()
            response = http.post(
                f"{server.base_url}/api/auth/login", json={"token": TOKEN}, timeout=60
            )
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            body = response.json()
            samples.append(elapsed)
            http.post(
                f"{server.base_url}/api/auth/logout",
                headers={"Authorization": body["sessionId"]},
                timeout=30,
            )
            time.sleep(0.5)  # let the connection close before the next cold login
        samples = samples[1:]  # the first one also imports discord.py and starts the loop
    p50 = median(samples)
    print(
        f"login to ready, {body['memberCount']} members: p50 {p50 * 1000:.0f} ms, "
        f"p90 {percentile(samples, 90) * 1000:.0f} ms, min {min(samples) * 1000:.0f} ms "
        f"({args.rounds} cold logins); target <= {TARGET_S * 1000:.0f} ms -> "
        f"{'PASS' if p50 <= TARGET_S else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
