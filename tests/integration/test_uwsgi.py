"""deploy/uwsgi.ini under a real uWSGI (PyPI's), behind deploy/nginx.conf, against the sandbox;
and Debian's older uWSGI, whose Python threads are off unless enabled.

Stop: SIGTERM to the master (die-on-term), as a container platform sends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from membersense.processes import MULTIPROCESS_REFUSAL
from membersense.sandbox.server import SandboxServer
from tests.hosts import DEPLOY, NginxServer, UwsgiServer, debian_uwsgi
from tests.integration.conftest import BASE_ENV
from tests.integration.support import (
    SECOND_TOKEN,
    Api,
    Control,
    log_records,
    logged,
    walk_the_api,
)
from tests.servers import ROOT, free_port

UWSGI_INI = (DEPLOY / "uwsgi.ini").read_text()
#: uWSGI's exit code when an app fails to load under need-app.
FAILED_APP = 22


def env_for(sandbox: SandboxServer, **extra: str) -> dict[str, str]:
    return {
        **BASE_ENV,
        "DISCORD_API_BASE": sandbox.api_url,
        "DISCORD_GATEWAY_URL": sandbox.gateway_url,
        **extra,
    }


@pytest.fixture(scope="module")
def uwsgi(sandbox: SandboxServer, module_tmp: Path) -> Iterator[UwsgiServer]:
    server = UwsgiServer(env_for(sandbox, TRUSTED_PROXIES="1"), module_tmp / "uwsgi.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nginx(uwsgi: UwsgiServer, module_tmp: Path) -> Iterator[NginxServer]:
    logs = module_tmp / "nginx"
    logs.mkdir()
    server = NginxServer(uwsgi.port, logs).start()
    yield server
    server.stop()


def test_the_api_end_to_end_through_nginx_and_uwsgi(nginx: NginxServer, uwsgi: UwsgiServer) -> None:
    api = Api(nginx.base_url)
    try:
        walk_the_api(api)  # a login succeeds: the Discord bridge runs in the worker
    finally:
        api.close()
    log = uwsgi.log()
    # The client nginx saw (TRUSTED_PROXIES=1).
    assert {
        record.get("remote_addr")
        for record in log_records(log)
        if record.get("logger") == "membersense.access"
    } == {"127.0.0.1"}
    assert "GET /api/members?" not in log  # uWSGI's own request log (with queries) is off


def test_one_client_request_after_another_without_nginx(uwsgi: UwsgiServer) -> None:
    # uWSGI closes its HTTP connection after each answer and says so (Connection: close):
    # a client keeping connections alive would otherwise meet a reset on its next request.
    api = Api(uwsgi.base_url)
    try:
        walk_the_api(api, SECOND_TOKEN)
        health = api.http.get(f"{uwsgi.base_url}/_ah/health", timeout=10)
        assert health.headers["Connection"] == "close"
    finally:
        api.close()


def test_sigterm_closes_every_session_and_discord_connection(
    sandbox: SandboxServer, module_tmp: Path
) -> None:
    server = UwsgiServer(env_for(sandbox), module_tmp / "uwsgi-stop.log").start()
    control = Control(sandbox.base_url)
    try:
        api = Api(server.base_url)
        api.login(SECOND_TOKEN)
        api.close()
        assert control.connections_of("Second Bot") == 1
        resumable = control.gateway()["resumable_sessions"]
        assert server.stop() == 0
        assert control.connections_of("Second Bot") == 0
        # Closed by MemberSense (code 1000), not dropped with the process: a dropped
        # connection would leave the sandbox a gateway session to resume.
        assert control.gateway()["resumable_sessions"] == resumable
    finally:
        server.stop()
        control.close()
    log = server.log()
    assert logged(log, "closed sessions at shutdown", count=1), log
    assert "goodbye to uWSGI" in log  # stopped (die-on-term), not reloaded


def assert_refused_in_one_line(server: UwsgiServer, line: str, exit_code: int | None) -> None:
    """uWSGI stops by itself (need-app) with *line* in its log, and with *exit_code* if given."""
    server.launch()
    code = server.exit_code()
    log = server.log()
    if exit_code is not None:
        assert code == exit_code, log
    assert line in log.splitlines(), log
    assert "no app loaded" in log, log
    # The refusal is that line, not a traceback. The only tracebacks are uWSGI's SIGINT
    # (KeyboardInterrupt) to a worker it stops while that one is still busy starting.
    if "Traceback" in log:
        assert "KeyboardInterrupt" in log, log


def test_several_processes_are_refused_at_start_up(
    sandbox: SandboxServer, module_tmp: Path
) -> None:
    server = UwsgiServer(
        env_for(sandbox),
        module_tmp / "uwsgi-two.log",
        args=("--ini", str(DEPLOY / "uwsgi.ini"), "--processes", "2"),
    )
    assert_refused_in_one_line(
        server, f"membersense: {MULTIPROCESS_REFUSAL} (this one runs 2)", FAILED_APP
    )


def test_debian_uwsgi_without_enable_threads_is_refused_at_start_up(
    sandbox: SandboxServer, module_tmp: Path
) -> None:
    binary = debian_uwsgi()
    port = free_port()
    server = UwsgiServer(
        env_for(sandbox),
        module_tmp / "debian-no-threads.log",
        binary=binary,
        port=port,
        args=(
            "--http-socket",
            f"127.0.0.1:{port}",
            "--master",
            "--need-app",
            "--lazy-apps",
            "--chdir",
            str(ROOT),
            "--module",
            "wsgi:app",
        ),
    )
    assert_refused_in_one_line(
        server,
        "membersense: uWSGI runs no Python threads here, so MemberSense's Discord bridge "
        "(a thread) would never run: set enable-threads = true (see deploy/uwsgi.ini)",
        None,
    )  # 2.0.21 exits 22 or 0, as its worker and master race


def test_debian_uwsgi_runs_the_shipped_ini(sandbox: SandboxServer, module_tmp: Path) -> None:
    server = UwsgiServer(env_for(sandbox), module_tmp / "debian-ini.log", binary=debian_uwsgi())
    server.start()
    try:
        api = Api(server.base_url)
        walk_the_api(api, SECOND_TOKEN)  # enable-threads: the bridge runs on uWSGI 2.0.21 too
        api.close()
        assert "Python threads support is disabled" not in server.log()
    finally:
        assert server.stop() == 0


def test_the_shipped_file_keeps_its_promises() -> None:
    """What the tests above do not reach: options without a quick observable effect."""
    options = {
        line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip()
        for line in UWSGI_INI.splitlines()
        if "=" in line and not line.startswith(";")
    }
    assert options["processes"] == "1"  # memory mode
    assert options["lazy-apps"] == "true"  # the app (and its threads) made in the worker
    assert options["single-interpreter"] == "true"
    assert options["enable-threads"] == "true"
    assert "harakiri" not in options  # one slow login must not kill every session
    assert int(options["worker-reload-mercy"]) < 10  # a container's SIGKILL comes after 10 s
