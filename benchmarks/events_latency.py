"""Benchmark: from a change in Discord to an event stream and a webhook (target: <= 1 s).

    .venv/bin/python -m benchmarks.events_latency [--rounds R]

A sandbox (own process) and MemberSense under gunicorn. A client holds an
event stream (``GET /api/events``) and a webhook subscription to a receiver
on this machine (``WEBHOOK_ALLOW_PRIVATE=1``). Each round, a member joins and
posts a message through the sandbox's control API; the time from that call
to the frame on the stream and to the signed POST at the receiver is
measured (gateway dispatch, discord.py, the translator, the bus, the stream's
read or the deliverer's outbox, HTTP).
"""

from __future__ import annotations

import argparse
import time

import requests

from benchmarks.common import GunicornServer, Sandbox, median, percentile
from tests.receiver import running_receiver
from tests.sse import FrameReader

TARGET_S = 1.0
TOKEN = "bench-events-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    with (
        Sandbox(
            "--members", "1000", "--token", TOKEN, "--channels", "2", "--messages", "1"
        ) as sandbox,
        GunicornServer(
            {
                **sandbox.env(),
                "RATE_LIMIT_MAX_REQUESTS": "100000",
                "LOG_LEVEL": "WARNING",
                "WEBHOOK_ALLOW_PRIVATE": "1",
            }
        ) as server,
        running_receiver() as receiver,
        requests.Session() as http,
    ):
        api, control = server.base_url, f"{sandbox.base_url}/_sandbox"
        login = http.post(f"{api}/api/auth/login", json={"token": TOKEN}, timeout=60).json()
        auth = {"Authorization": login["sessionId"]}
        guild = login["guildId"]
        channel = http.get(f"{api}/api/channels", headers=auth, timeout=30).json()[0]["id"]
        http.post(
            f"{api}/api/webhooks",
            headers=auth,
            timeout=30,
            json={"url": receiver.url, "events": ["member.join", "message.create"]},
        ).raise_for_status()
        stream = http.get(f"{api}/api/events", headers=auth, stream=True, timeout=(10, 60))
        frames = FrameReader(stream.iter_content(chunk_size=None))
        next(frames)
        timings: dict[str, list[float]] = {
            k: [] for k in ("join stream", "join webhook", "message stream", "message webhook")
        }
        for n in range(args.rounds):
            for kind, path, body in (
                (
                    "join",
                    f"/guilds/{guild}/members",
                    {"username": f"bench{n}x{time.time_ns() % 10**6}"},
                ),
                ("message", f"/channels/{channel}/messages", {"content": f"bench {n}"}),
            ):
                started = time.perf_counter()
                http.post(control + path, json=body, timeout=30).raise_for_status()
                expected = "member.join" if kind == "join" else "message.create"
                while frames.next_event().event != expected:
                    pass
                timings[f"{kind} stream"].append(time.perf_counter() - started)
                delivery = receiver.wait_for(2 * n + (1 if kind == "join" else 2))[-1]
                timings[f"{kind} webhook"].append(delivery.received_at - started)
        stream.close()
        http.post(f"{api}/api/auth/logout", headers=auth, timeout=30)
    worst = 0.0
    for name, samples in timings.items():
        p50 = median(samples)
        worst = max(worst, p50)
        print(
            f"{name}: p50 {p50 * 1000:.1f} ms, p90 {percentile(samples, 90) * 1000:.1f} ms, "
            f"max {max(samples) * 1000:.1f} ms ({len(samples)} events)"
        )
    print(f"target: p50 <= {TARGET_S * 1000:.0f} ms -> {'PASS' if worst <= TARGET_S else 'FAIL'}")


if __name__ == "__main__":
    main()
