"""A slow Discord under gunicorn: history reads hold their share of the threads, no more.

The sandbox delays every REST call under /channels (message history) while
more history reads are sent at once than the server has threads. Health
checks and cached member lists must answer while those reads are still
stuck, and the reads past the share get a 503 with Retry-After at once.
Without the bulkhead every thread waits on Discord and nothing else is served
until the delay ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

from tests.integration.conftest import DISCORD_TIMEOUT_S, MemberSense

THREADS = 4  # a history share of 1 (an eighth, at least one)
READERS = 6
#: The sandbox's delay: below DISCORD_TIMEOUT, so the stuck reads end well.
DELAY_S = DISCORD_TIMEOUT_S * 2 / 3


def test_history_reads_cannot_take_the_threads(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    server = membersense_factory(THREADS=str(THREADS))
    api = server.api
    assert api is not None
    session = api.login()
    try:
        channel = api.get("/api/channels", session).json()[0]["id"]
        assert api.get("/api/members", session).status_code == 200  # cached from now on
        server.control.request(
            "POST", "/faults", count=READERS * 2, path="/channels/*", delay_ms=int(DELAY_S * 1000)
        )
        url = f"{server.server.base_url}/api/messages"
        answers: list[tuple[float, requests.Response]] = []
        lock = threading.Lock()
        started = time.monotonic()

        def read() -> None:
            response = requests.get(
                url, params={"channelId": channel}, timeout=30, headers={"Authorization": session}
            )
            with lock:
                answers.append((time.monotonic() - started, response))

        readers = [threading.Thread(target=read) for _ in range(READERS)]
        for reader in readers:
            reader.start()
        time.sleep(0.5)  # the reads are in, one of them stuck on Discord

        served = []
        for path in ("/_ah/health", "/api/members", "/_ah/health", "/api/members"):
            response = api.get(path, session)
            served.append((time.monotonic() - started, response.status_code))
        for reader in readers:
            reader.join(30)

        ok = [at for at, response in answers if response.status_code == 200]
        refused = [(at, response) for at, response in answers if response.status_code == 503]
        assert len(ok) == 1 and len(refused) == READERS - 1  # the share is one thread
        stuck_until = ok[0]
        assert stuck_until >= DELAY_S
        # Everything else was answered while the read was still waiting on Discord.
        assert [status for _, status in served] == [200] * 4
        assert all(at < stuck_until for at, _ in served)
        for at, response in refused:
            assert at < stuck_until
            assert response.headers["Retry-After"] == "1"
            assert response.json()["error"] == (
                "Too many message reads waiting on Discord; try again shortly"
            )
    finally:
        server.control.request("DELETE", "/faults")
        api.logout(session)
