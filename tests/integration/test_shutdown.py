"""SIGTERM while a request waits on Discord: shutdown starts at once, not after gunicorn's drain."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

from membersense.serving import GRACEFUL_TIMEOUT_S
from tests.integration.conftest import MemberSense
from tests.integration.support import MAIN_TOKEN, wait_until


def test_sigterm_cuts_a_stalled_login_short_and_exits_well_inside_the_grace(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    server = membersense_factory(LOGIN_TIMEOUT="30000")
    control = server.control
    # Discord takes 10 s (more than gunicorn's 8 s graceful timeout) to answer the login's first call.
    control.request("POST", "/faults", count=1, path="/users/@me", delay_ms=10000)
    answers: list[requests.Response] = []
    login = threading.Thread(
        target=lambda: answers.append(
            requests.post(
                f"{server.server.base_url}/api/auth/login", json={"token": MAIN_TOKEN}, timeout=40
            )
        )
    )
    login.start()
    try:
        wait_until(
            lambda: not control.request("GET", "/faults")["faults"],
            what="the login to reach the stalled call",
        )
        started = time.monotonic()
        assert server.server.stop(timeout=20) == 0
        elapsed = time.monotonic() - started
    finally:
        login.join(40)
        control.request("DELETE", "/faults")
    # gunicorn alone would wait out its graceful timeout (8 s) for the login, then kill
    # the worker; we give it IN_FLIGHT_GRACE_S (2 s) and then close the Discord bridge.
    assert elapsed < GRACEFUL_TIMEOUT_S, elapsed
    assert len(answers) == 1
    assert answers[0].status_code == 503
    assert answers[0].json()["error"] == "Server is shutting down"
    assert int(answers[0].headers["Retry-After"]) >= 1
    assert "closed sessions at shutdown" not in server.server.log()  # it never had one
