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


def test_responses_reach_the_server_with_werkzeugs_header_fixes_where_they_need_them() -> None:
    from werkzeug.test import EnvironBuilder

    response_class = create_app({}, discord=FakeDiscord()).response_class
    environ = EnvironBuilder("/t").get_environ()

    def sent(response) -> dict[str, str]:
        _, _, headers = response.get_wsgi_response(environ)
        return dict(headers)

    plain = response_class(b"abc", headers={"ETag": '"x"'})
    assert sent(plain) == {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Length": "3",
        "ETag": '"x"',
    }
    moved = response_class(status=302, headers={"Location": "/t/caf\u00e9"})
    assert sent(moved)["Location"] == "/t/caf%C3%A9"  # made a URI
    assert "Content-Length" not in sent(response_class(b"", status=204))
    not_modified = response_class(b"", status=304, headers={"ETag": '"x"'})
    assert "Content-Length" not in sent(not_modified)
    assert "Content-Length" not in sent(response_class(iter([b"a", b"b"])))  # unknown
    listed = response_class([b"a", b"bc"])
    del listed.headers["Content-Length"]
    assert sent(listed)["Content-Length"] == "3"  # worked out
