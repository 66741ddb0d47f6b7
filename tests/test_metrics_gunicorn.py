"""Metrics under real gunicorn: one worker as deployed, and two workers' values summed.

prometheus-client's multiprocess mode: gunicorn's master gives its workers a
directory for their metric files (a private one unless the operator set
``PROMETHEUS_MULTIPROC_DIR``), a scrape on any worker sums them, and a dead
worker's live gauges are dropped by the ``child_exit`` hook.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.support import wait_until
from tests.servers import GunicornServer
from tests.test_metrics import value

TOKEN = "gunicorn-metrics-token-42"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def clean_env(**extra: str) -> dict[str, str]:
    """The settings these servers run with; an inherited PROMETHEUS_MULTIPROC_DIR is dropped."""
    return {"PROMETHEUS_MULTIPROC_DIR": "", "METRICS_TOKEN": TOKEN, **extra}


def workers_of(master: int) -> list[int]:
    path = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def scrape(server: GunicornServer) -> str:
    response = requests.get(f"{server.base_url}/metrics", headers=BEARER, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[GunicornServer]:
    """MemberSense as deployed (gunicorn.conf.py, one worker) with METRICS_TOKEN."""
    with GunicornServer(clean_env(), log_path=tmp_path / "server.log") as server:
        yield server


def test_counters_move_under_gunicorn(deployed: GunicornServer) -> None:
    before = scrape(deployed)
    for _ in range(5):
        assert requests.get(f"{deployed.base_url}/_ah/health", timeout=5).status_code == 200
    assert requests.get(f"{deployed.base_url}/api/members", timeout=5).status_code == 401
    after = scrape(deployed)
    assert (
        value(
            after,
            "membersense_http_request_duration_seconds_count",
            route="/_ah/health",
            status="200",
        )
        - value(
            before,
            "membersense_http_request_duration_seconds_count",
            route="/_ah/health",
            status="200",
        )
        == 5
    )
    assert (
        value(
            after,
            "membersense_http_request_duration_seconds_count",
            route="/api/members",
            status="401",
        )
        - value(
            before,
            "membersense_http_request_duration_seconds_count",
            route="/api/members",
            status="401",
        )
        == 1
    )
    assert value(after, "membersense_sessions_active") == 0


def test_a_wrong_token_is_401_under_gunicorn(deployed: GunicornServer) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-token-at-all"}):
        response = requests.get(f"{deployed.base_url}/metrics", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthorized"}


def test_the_master_gives_workers_a_private_directory_and_removes_it(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"  # where tempfile makes the server's directory
    temp.mkdir()
    server = GunicornServer(clean_env(TMPDIR=str(temp)), log_path=tmp_path / "server.log")
    server.start()
    try:
        (directory,) = temp.glob("membersense-metrics-*")
        scrape(server)
        assert list(directory.glob("*.db"))  # the worker writes its values there
    finally:
        assert server.stop() == 0
    assert not directory.exists()


def test_an_operators_directory_is_wiped_at_start_and_kept(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    stale = directory / "counter_1.db"
    stale.write_bytes(b"left over from the last run")
    keep = directory / "notes.txt"
    keep.write_text("not ours")
    with GunicornServer(
        clean_env(PROMETHEUS_MULTIPROC_DIR=str(directory)), log_path=tmp_path / "server.log"
    ) as server:
        assert not stale.exists()
        scrape(server)
    assert keep.exists() and directory.is_dir()


def test_two_workers_are_summed_and_a_dead_workers_gauge_dropped(tmp_path: Path) -> None:
    server = GunicornServer(
        clean_env(),
        log_path=tmp_path / "server.log",
        args=("-c", "tests/multiworker_gunicorn.py", "tests.multiworker_app:app"),
    )
    # GunicornServer passes "-c gunicorn.conf.py ... wsgi:app": the later -c and the
    # first app win.
    with server:
        assert server.process is not None
        wait_until(lambda: len(workers_of(server.process.pid)) == 2, what="two workers")
        served: Counter[int] = Counter()
        for _ in range(400):  # a new connection each time; the kernel picks the worker
            served[requests.get(f"{server.base_url}/_test/pid", timeout=5).json()["pid"]] += 1
            if len(served) == 2 and min(served.values()) >= 3:
                break
        assert len(served) == 2, served
        text = scrape(server)
        assert value(
            text, "membersense_http_request_duration_seconds_count", route="/_test/pid"
        ) == sum(served.values())

        holding: set[int] = set()
        for _ in range(400):
            holding.add(requests.post(f"{server.base_url}/_test/gateway", timeout=5).json()["pid"])
            if len(holding) == 2:
                break
        assert len(holding) == 2
        assert value(scrape(server), "membersense_gateway_connections") == 2

        victim = next(iter(holding))
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: value(scrape(server), "membersense_gateway_connections") == 1,
            what="the dead worker's gauge to go",
        )
        # Its counts stay in the sums: counters never go backwards.
        assert value(
            scrape(server), "membersense_http_request_duration_seconds_count", route="/_test/pid"
        ) == sum(served.values())
