"""deploy/mod_wsgi.conf under a real Apache httpd with mod_wsgi (daemon mode), against the sandbox.

Apache's children run as an unprivileged user; tests/hosts.py gives that user a readable
Python, virtualenv and checkout. Stops: SIGTERM (apachectl -k stop) and SIGWINCH
(apachectl -k graceful-stop).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from membersense.processes import MULTIPROCESS_REFUSAL
from membersense.runtime import IN_FLIGHT_GRACE_S
from membersense.sandbox.server import SandboxServer
from tests.hosts import ApacheServer, wait_for_port
from tests.integration.conftest import BASE_ENV
from tests.integration.support import (
    MAIN_TOKEN,
    SECOND_TOKEN,
    Api,
    Control,
    logged,
    wait_until,
    walk_the_api,
)

#: shutdown-timeout of deploy/mod_wsgi.conf: how long a stopping daemon may take.
SHUTDOWN_TIMEOUT_S = 8


def env_for(sandbox: SandboxServer, **extra: str) -> dict[str, str]:
    return {
        **BASE_ENV,
        "DISCORD_API_BASE": sandbox.api_url,
        "DISCORD_GATEWAY_URL": sandbox.gateway_url,
        **extra,
    }


@pytest.fixture
def apache_factory(sandbox: SandboxServer, tmp_path: Path) -> Iterator[Callable[..., ApacheServer]]:
    """``make(variant=None, **env)`` builds an Apache (not started); all are stopped afterwards."""
    made: list[ApacheServer] = []

    def make(variant: Callable[[str], str] | None = None, **env: str) -> ApacheServer:
        logs = tmp_path / f"apache-{len(made)}"
        logs.mkdir()
        made.append(ApacheServer(env_for(sandbox, **env), logs, variant=variant))
        return made[-1]

    yield make
    for server in made:
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def apache(sandbox: SandboxServer, module_tmp: Path) -> Iterator[ApacheServer]:
    logs = module_tmp / "apache"
    logs.mkdir()
    server = ApacheServer(env_for(sandbox), logs).start()
    yield server
    server.stop()


def test_the_api_end_to_end_through_apache(apache: ApacheServer) -> None:
    api = Api(apache.base_url)
    try:
        # A login succeeds (the bridge runs in the daemon) and the session id reaches the
        # app (WSGIPassAuthorization): members, channels and messages answer 200.
        walk_the_api(api)
    finally:
        api.close()
    assert "Traceback" not in apache.log()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGWINCH], ids=["stop", "graceful-stop"])
def test_stopping_apache_closes_every_session_and_discord_connection(
    apache_factory: Callable[..., ApacheServer], sandbox: SandboxServer, stop: signal.Signals
) -> None:
    server = apache_factory().start()
    control = Control(sandbox.base_url)
    try:
        api = Api(server.base_url)
        api.login(SECOND_TOKEN)
        api.close()
        assert control.connections_of("Second Bot") == 1
        resumable = control.gateway()["resumable_sessions"]
        assert server.stop(stop) == 0
        assert control.connections_of("Second Bot") == 0
        # Closed by MemberSense (code 1000), not dropped with the process: a dropped
        # connection would leave the sandbox a gateway session to resume.
        assert control.gateway()["resumable_sessions"] == resumable
    finally:
        control.close()
    log = server.log()
    assert logged(log, "closed sessions at shutdown", count=1), log


def test_stop_with_a_login_in_flight_still_closes_the_discord_connection(
    apache_factory: Callable[..., ApacheServer], sandbox: SandboxServer
) -> None:
    server = apache_factory(LOGIN_TIMEOUT="30000").start()
    control = Control(sandbox.base_url)
    # Discord stalls the login's first call for longer than the whole stop takes.
    control.request("POST", "/faults", count=1, path="/users/@me", delay_ms=25_000)
    answers: list[requests.Response | Exception] = []

    def log_in() -> None:
        try:
            answers.append(
                requests.post(
                    f"{server.base_url}/api/auth/login", json={"token": MAIN_TOKEN}, timeout=40
                )
            )
        except requests.RequestException as exc:
            answers.append(exc)

    login = threading.Thread(target=log_in)
    login.start()
    try:
        wait_until(
            lambda: not control.request("GET", "/faults")["faults"],
            what="the login to reach the stalled call",
        )
        # Apache gives its children ~10 s to finish (the one serving the login does not),
        # then stops the daemon, which must itself be done within its shutdown-timeout.
        assert server.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        login.join(40)
        control.request("DELETE", "/faults")
    assert control.connections_of("Main Bot") == 0
    control.close()
    # Apache dropped the client's connection; the daemon heard of its stop (mod_wsgi's
    # shutdown event), closed after IN_FLIGHT_GRACE_S, ending the login's wait on Discord,
    # rather than being aborted at its shutdown-timeout with the wait still under way.
    assert len(answers) == 1
    assert isinstance(answers[0], requests.ConnectionError) or answers[0].json() == {
        "error": "Server is shutting down"
    }
    log = server.log()
    assert logged(log, "closed bot connections", count=1), log
    assert "Aborting process" not in log, log
    assert IN_FLIGHT_GRACE_S < SHUTDOWN_TIMEOUT_S


def with_processes(count: int) -> Callable[[str], str]:
    """deploy/mod_wsgi.conf with processes=*count* on its daemon (tests of the app's refusal)."""

    def variant(text: str) -> str:
        daemon = "WSGIDaemonProcess membersense threads=8"
        assert text.count(daemon) == 1
        return text.replace(daemon, f"WSGIDaemonProcess membersense processes={count} threads=8")

    return variant


def test_several_daemon_processes_are_refused_at_start_up(
    apache_factory: Callable[..., ApacheServer],
) -> None:
    server = apache_factory(variant=with_processes(2))
    server.launch()
    line = f"membersense: {MULTIPROCESS_REFUSAL} (this one runs 2)"
    # Each daemon process says it once as it starts, before any request.
    wait_until(lambda: server.log().count(line) == 2, timeout=60, what="the refusal")
    wait_for_port(server.port)
    for path in ("/_ah/health", "/api/members"):
        response = requests.get(server.base_url + path, timeout=10)
        assert response.status_code == 503
        assert response.json() == {"error": f"{MULTIPROCESS_REFUSAL} (this one runs 2)"}
        assert int(response.headers["Retry-After"]) >= 1
    log = server.log()
    assert log.count(line) == 2  # not again at each request
    assert "Traceback" not in log, log
    assert server.stop() == 0


def test_naming_one_process_makes_mod_wsgi_say_multiprocess(
    apache_factory: Callable[..., ApacheServer],
) -> None:
    # Why deploy/mod_wsgi.conf leaves processes= out: given at all, even as 1, mod_wsgi
    # sets wsgi.multiprocess, and memory mode answers 503.
    server = apache_factory(variant=with_processes(1))
    server.launch()
    wait_for_port(server.port)
    response = wait_until(
        lambda: _answer(server.base_url + "/api/members"), timeout=60, what="an answer"
    )[0]
    assert response.status_code == 503
    assert response.json()["error"] == MULTIPROCESS_REFUSAL
    assert server.stop() == 0


def _answer(url: str) -> tuple[requests.Response] | None:
    try:
        return (requests.get(url, timeout=10),)  # a tuple: a 503 Response is falsy
    except requests.ConnectionError:
        return None
