"""Benchmark: worker RSS growth per additional session, 1 000-member guild (target: <= 5 MB).

    .venv/bin/python -m benchmarks.memory_per_session [--sessions N] [--members M]

MemberSense under gunicorn against a sandbox (own process) whose guild has
*N* + 1 bots. After a warm-up login (imports, loop thread, first caches), it
opens *N* sessions, each with its own bot token (its own gateway connection
and discord.py member cache: the costly case) and reads each one's member
list once (so its serialized snapshot exists too), then measures the worker's
RSS. Then *N* more sessions sharing one token, which share its connection.
"""

from __future__ import annotations

import argparse

import requests

from benchmarks.common import GunicornServer, Sandbox, rss_kib, worker_of

TARGET_MB = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--members", type=int, default=1000)
    args = parser.parse_args()
    tokens = [f"bench-memory-token-{i:03d}" for i in range(args.sessions + 1)]
    token_args = [arg for token in tokens for arg in ("--token", token)]

    with (
        Sandbox(
            "--members", str(args.members), "--channels", "3", "--messages", "1", *token_args
        ) as sandbox,
        GunicornServer(
            {
                **sandbox.env(),
                "RATE_LIMIT_MAX_REQUESTS": "100000",
                "MAX_CONCURRENT_USERS": str(3 * args.sessions),
                "LOG_LEVEL": "WARNING",
            }
        ) as server,
        requests.Session() as http,
    ):
        assert server.process is not None
        worker = worker_of(server.process.pid)

        def login(token: str) -> str:
            response = http.post(
                f"{server.base_url}/api/auth/login", json={"token": token}, timeout=60
            )
            response.raise_for_status()
            session = response.json()["sessionId"]
            http.get(
                f"{server.base_url}/api/members", headers={"Authorization": session}, timeout=60
            ).raise_for_status()
            return session

        warm = login(tokens[0])
        baseline = rss_kib(worker)
        distinct = [login(token) for token in tokens[1:]]
        after_distinct = rss_kib(worker)
        shared = [login(tokens[1]) for _ in range(args.sessions)]
        after_shared = rss_kib(worker)
        members = len(
            http.get(
                f"{server.base_url}/api/members", headers={"Authorization": warm}, timeout=60
            ).json()
        )
        for session in [warm, *distinct, *shared]:
            http.post(
                f"{server.base_url}/api/auth/logout", headers={"Authorization": session}, timeout=30
            )
    per_distinct = (after_distinct - baseline) / args.sessions / 1024
    per_shared = (after_shared - after_distinct) / args.sessions / 1024
    print(
        f"worker RSS: {baseline / 1024:.1f} MB after warm-up, "
        f"{after_distinct / 1024:.1f} MB with {args.sessions} more bots, "
        f"{after_shared / 1024:.1f} MB with {args.sessions} sessions more on one bot "
        f"({members} members per guild)"
    )
    print(
        f"growth per session with its own bot token: {per_distinct:.2f} MB; "
        f"target <= {TARGET_MB:.0f} MB -> {'PASS' if per_distinct <= TARGET_MB else 'FAIL'}"
    )
    print(f"growth per session sharing a token: {per_shared * 1024:.0f} KB")


if __name__ == "__main__":
    main()
