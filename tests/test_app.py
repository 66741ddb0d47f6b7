"""The app factory: settings from test_config, and nothing started by building an app."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from membersense import create_app
from tests.fakes import FakeDiscord
from tests.servers import ROOT


def test_building_an_app_starts_no_thread() -> None:
    before = set(threading.enumerate())
    app = create_app({}, discord=FakeDiscord())
    # (Earlier tests' threads may end meanwhile; only new ones matter.)
    assert set(threading.enumerate()) - before == set()
    # The first request starts only what serving needs (the rate limiter's storage).
    assert app.test_client().get("/_ah/health").status_code == 200


def test_importing_wsgi_starts_no_thread_and_opens_no_socket() -> None:
    # A fresh interpreter, as gunicorn's worker imports it: count threads and sockets.
    probe = (
        "import os, threading\n"
        "import wsgi\n"
        "sockets = 0\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        sockets += os.readlink(f'/proc/self/fd/{fd}').startswith('socket:')\n"
        "    except OSError:\n"
        "        pass  # the listing's own descriptor, closed by now\n"
        "print(threading.active_count(), sockets)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "0"]


def test_test_config_wins_over_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_USERS", "7")
    app = create_app({"PORT": "9999"}, discord=FakeDiscord())
    settings = app.config["SETTINGS"]
    assert settings.port == 9999
    assert settings.max_concurrent_users == 100  # the environment is not read for test apps
    assert app.config["MAX_CONTENT_LENGTH"] == 65536
