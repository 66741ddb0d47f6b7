"""membersense.hosting with the servers' modules faked (the real servers: tests/integration/
test_uwsgi.py and test_mod_wsgi.py)."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from membersense import create_app, hosting, runtime_of
from membersense.hosting import (
    NOT_STARTED,
    StartupRefused,
    ThreadsDisabled,
    check_threads,
    close_on_shutdown,
    process_count,
    server_module,
    wsgi_app,
)
from membersense.processes import MULTIPROCESS_REFUSAL
from tests.fakes import FakeDiscord


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Callable[..., types.ModuleType]:
    """``server(name, **attributes)``: the module uWSGI or mod_wsgi puts in the interpreter."""

    def make(name: str, **attributes: Any) -> types.ModuleType:
        module = types.ModuleType(name)
        if name == "mod_wsgi":
            module.process_group = "membersense"  # type: ignore[attr-defined]
        for key, value in attributes.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)
        return module

    return make


@pytest.fixture
def atexit_calls(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], None]]:
    """What would run at interpreter exit (not registered for real)."""
    calls: list[Callable[[], None]] = []
    monkeypatch.setattr(hosting.atexit, "register", calls.append)
    return calls


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        runtime_of(app).close()


@pytest.fixture
def build(apps: list[Flask]) -> Callable[[], Flask]:
    def factory() -> Flask:
        apps.append(create_app({}, discord=FakeDiscord()))
        return apps[-1]

    return factory


def test_no_server_module_outside_uwsgi_and_apache() -> None:
    assert server_module() is None
    assert process_count() is None
    check_threads()


def test_mod_wsgi_express_outside_apache_is_not_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mod_wsgi", types.ModuleType("mod_wsgi"))
    assert server_module() is None


def test_process_counts_as_each_server_says(server: Callable[..., types.ModuleType]) -> None:
    server("mod_wsgi", maximum_processes=3)
    assert process_count() == 3
    server("uwsgi", numproc=2)  # uWSGI wins: its module is the one importable
    assert process_count() == 2


def test_uwsgi_without_python_threads_is_refused(server: Callable[..., types.ModuleType]) -> None:
    uwsgi = server("uwsgi", numproc=1, has_threads=0)
    with pytest.raises(ThreadsDisabled, match="enable-threads = true"):
        check_threads()
    uwsgi.has_threads = 1  # type: ignore[attr-defined]
    check_threads()


def test_a_healthy_start_serves_the_app_and_closes_it_at_exit(
    build: Callable[[], Flask], atexit_calls: list[Callable[[], None]]
) -> None:
    app = wsgi_app(build)
    assert isinstance(app, Flask)
    assert app.test_client().get("/_ah/health").status_code == 200
    assert len(atexit_calls) == 1
    atexit_calls[0]()
    assert runtime_of(app).closed


def test_under_uwsgi_a_refusal_fails_the_import_in_one_line(
    server: Callable[..., types.ModuleType],
    build: Callable[[], Flask],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server("uwsgi", numproc=2, has_threads=1)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored afterwards
    with pytest.raises(StartupRefused) as refused:
        wsgi_app(build)
    line = f"membersense: {MULTIPROCESS_REFUSAL} (this one runs 2)"
    assert str(refused.value) == line
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    # uWSGI prints the failed import through sys.excepthook: ours prints just the line...
    sys.excepthook(StartupRefused, refused.value, refused.value.__traceback__)
    assert capsys.readouterr().err == line + "\n"
    # ...and leaves every other exception to the hook it replaced.
    try:
        raise KeyError("other")
    except KeyError as other:
        sys.excepthook(KeyError, other, other.__traceback__)
    assert "Traceback" in capsys.readouterr().err


def test_a_bad_setting_fails_the_import_in_one_line(
    build: Callable[[], Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setenv("THREADS", "many")
    with pytest.raises(StartupRefused, match=r"^membersense: THREADS must be"):
        wsgi_app(create_app)


def _call(app: Callable[..., Any], path: str = "/api/members") -> tuple[str, dict[str, str], Any]:
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started.update(status=status, headers=dict(headers))

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
    assert int(started["headers"]["Content-Length"]) == len(body)
    return started["status"], started["headers"], json.loads(body)


def test_under_mod_wsgi_a_refusal_answers_every_request_503(
    server: Callable[..., types.ModuleType],
    build: Callable[[], Flask],
    capsys: pytest.CaptureFixture[str],
) -> None:
    server("mod_wsgi", maximum_processes=2)
    app = wsgi_app(build)
    assert capsys.readouterr().err == f"membersense: {MULTIPROCESS_REFUSAL} (this one runs 2)\n"
    for path in ("/_ah/health", "/api/members"):
        status, headers, body = _call(app, path)
        assert status.startswith("503 ")
        assert body == {"error": f"{MULTIPROCESS_REFUSAL} (this one runs 2)"}
        assert headers["Content-Type"] == "application/json"
        assert int(headers["Retry-After"]) >= 1
    assert capsys.readouterr().err == ""  # said once, at start-up


def test_under_mod_wsgi_a_bad_setting_is_for_the_log_only(
    server: Callable[..., types.ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server("mod_wsgi", maximum_processes=1)
    monkeypatch.setenv("RATE_LIMIT_STORAGE_URI", "nonsense://secret")
    app = wsgi_app(create_app)
    assert capsys.readouterr().err.startswith("membersense: RATE_LIMIT_STORAGE_URI")
    assert _call(app)[2] == {"error": NOT_STARTED}


def test_uwsgi_runs_its_atexit_hook_then_the_one_before(
    server: Callable[..., types.ModuleType],
    build: Callable[[], Flask],
    atexit_calls: list[Callable[[], None]],
) -> None:
    earlier: list[str] = []
    uwsgi = server("uwsgi", numproc=1, has_threads=1, atexit=lambda: earlier.append("ran"))
    app = wsgi_app(build)
    uwsgi.atexit()
    assert runtime_of(app).closed
    assert earlier == ["ran"]
    assert len(atexit_calls) == 1  # Python's atexit too, wherever the teardown gets that far


def test_mod_wsgi_shutdown_refuses_logins_then_closes_after_the_grace(
    server: Callable[..., types.ModuleType],
    build: Callable[[], Flask],
    atexit_calls: list[Callable[[], None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscribed: list[Callable[..., Any]] = []
    server("mod_wsgi", maximum_processes=1, subscribe_shutdown=subscribed.append)
    app = build()
    runtime = runtime_of(app)
    close_on_shutdown(runtime)
    assert len(subscribed) == 1
    waited: list[float] = []
    monkeypatch.setattr(runtime, "wait_closed", lambda timeout: waited.append(timeout) or False)
    subscribed[0]("process_stopping", reason="shutdown_signal")  # mod_wsgi 6's call
    assert waited == [hosting.IN_FLIGHT_GRACE_S]
    assert runtime.closed
    response = app.test_client().post("/api/auth/login", json={"token": "good-token"})
    assert response.status_code == 503
