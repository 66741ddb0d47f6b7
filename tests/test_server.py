"""The app under real gunicorn, configured by gunicorn.conf.py, over real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.servers import ROOT, VENV_BIN, GunicornServer, exchange, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    env = {
        "RATE_LIMIT_MAX_REQUESTS": "1000",
        "RATE_LIMIT_WINDOW": "60000",
        "MAX_CONTENT_LENGTH": "2048",
        "ALLOWED_ORIGINS": "https://app.example",
    }
    with GunicornServer(env, log_path=log) as running:
        yield running


def test_health_check(server: GunicornServer) -> None:
    response = requests.get(f"{server.base_url}/_ah/health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}
    assert response.headers["Content-Type"] == "application/json"
    assert len(response.headers["X-Request-ID"]) == 21


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "error"),
    [
        ("GET", "/nowhere", {}, 404, "Not Found"),
        ("GET", "/metrics", {}, 404, "Not Found"),  # neither METRICS_TOKEN nor METRICS_PUBLIC
        ("PUT", "/api/members", {}, 405, "Method Not Allowed"),
        ("POST", "/api/auth/login", {"data": "{"}, 400, "Invalid JSON payload"),
        ("POST", "/api/auth/login", {"json": {"token": ""}}, 400, "Token is required"),
        (
            "POST",
            "/api/auth/login",
            {"json": {"token": "no spaces allowed"}},
            401,
            "Invalid Discord token",
        ),
        ("POST", "/api/auth/login", {"data": "x" * 5000}, 413, "Request Entity Too Large"),
        ("GET", "/api/members", {}, 401, "Unauthorized"),
        (
            "POST",
            "/api/auth/logout",
            {"headers": {"Authorization": "Bearer nope"}},
            401,
            "Unauthorized",
        ),
        ("GET", "/api/messages", {"headers": {"Authorization": "x" * 21}}, 401, "Unauthorized"),
    ],
)
def test_errors_over_http(
    server: GunicornServer,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    error: str,
) -> None:
    headers = {"Origin": "https://app.example", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    response = requests.request(
        method, server.base_url + path, timeout=5, headers=headers, **kwargs
    )  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": error}
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_chunked_bodies_are_read_and_limited(server: GunicornServer) -> None:
    def chunks(*parts: bytes):
        yield from parts  # a generator body: requests sends it chunked, with no Content-Length

    small = requests.post(
        f"{server.base_url}/api/auth/login", timeout=5, data=chunks(b'{"token"', b': ""}')
    )
    assert small.request.headers.get("Transfer-Encoding") == "chunked"
    assert (small.status_code, small.json()) == (400, {"error": "Token is required"})
    big = requests.post(
        f"{server.base_url}/api/auth/login",
        timeout=5,
        data=chunks(b'{"token": "', b"x" * 5000, b'"}'),
    )
    assert (big.status_code, big.json()) == (413, {"error": "Request Entity Too Large"})


LOGIN_HEAD = b"POST /api/auth/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"


def test_json_nested_too_deeply_is_a_400(server: GunicornServer) -> None:
    body = b"[" * 1000 + b"]" * 1000
    [response] = exchange(
        server.base_url,
        LOGIN_HEAD + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body,
    )
    assert (response.status, response.json()) == (400, {"error": "JSON nested too deeply"})
    assert "RecursionError" not in server.log()


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",  # not a chunk size
        b"3\r\nabcXY0\r\n\r\n",  # no CRLF after the chunk
        b"3;=bad\r\nabc\r\n0\r\n\r\n",  # a malformed chunk extension
        b"3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",  # a malformed trailer
    ],
    ids=["size", "terminator", "extension", "trailer"],
)
def test_a_malformed_chunked_body_is_one_400_then_the_connection_closes(
    server: GunicornServer, body: bytes
) -> None:
    # Followed by a request that must never be served: where it starts is unknown.
    follow_up = b"GET /_ah/health HTTP/1.1\r\nHost: test\r\n\r\n"
    responses = exchange(
        server.base_url, LOGIN_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body + follow_up
    )
    assert [(r.status, r.json()) for r in responses] == [(400, {"error": "Malformed request body"})]
    assert responses[0].headers["connection"] == "close"
    assert "unhandled" not in server.log()


def test_a_malformed_chunked_body_nobody_reads_closes_without_a_second_answer(
    server: GunicornServer,
) -> None:
    # The health check ignores the body; gunicorn's drain would have raised and
    # written a second, HTML answer.
    responses = exchange(
        server.base_url,
        b"POST /_ah/health HTTP/1.1\r\nHost: test\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    assert len(responses) == 1
    assert responses[0].headers["content-type"] == "application/json"


def test_options_without_origin_is_204_without_a_body(server: GunicornServer) -> None:
    [response] = exchange(
        server.base_url, b"OPTIONS /api/members HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    assert response.status == 204 and response.body == b""
    assert "content-type" not in response.headers
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


@pytest.mark.parametrize("path", ["/api//members", "/_ah//health"])
def test_doubled_slashes_are_a_json_404_not_an_html_redirect(
    server: GunicornServer, path: str
) -> None:
    [response] = exchange(
        server.base_url, f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
    )
    assert (response.status, response.json()) == (404, {"error": "Not Found"})


def test_the_rate_limit_over_http(tmp_path: Path) -> None:
    env = {"RATE_LIMIT_MAX_REQUESTS": "5", "RATE_LIMIT_WINDOW": "60000"}
    with GunicornServer(env, log_path=tmp_path / "log") as server, requests.Session() as http:
        responses = [http.get(f"{server.base_url}/api/channels", timeout=5) for _ in range(6)]
        assert [r.status_code for r in responses] == [401] * 5 + [429]
        assert [r.headers["RateLimit-Remaining"] for r in responses] == [
            "4",
            "3",
            "2",
            "1",
            "0",
            "0",
        ]
        blocked = responses[-1]
        assert blocked.json()["error"] == "Too many requests"
        assert int(blocked.headers["Retry-After"]) == blocked.json()["retryAfter"] >= 59
        assert http.get(f"{server.base_url}/_ah/health", timeout=5).status_code == 200


def test_access_log_is_json_and_free_of_tokens(server: GunicornServer) -> None:
    token = "MTE0NTE0MTkxOTgxMDg5MzQ0MA.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789"
    requests.post(
        f"{server.base_url}/api/auth/login",
        json={"token": token + " x"},
        timeout=5,
        headers={"X-Request-ID": "trace-me"},
    )
    deadline = time.monotonic() + 5
    while "trace-me" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log()
    assert token not in log
    entry = next(json.loads(line) for line in log.splitlines() if "trace-me" in line)
    assert entry["path"] == "/api/auth/login" and entry["status"] == 401


def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    server = GunicornServer(log_path=tmp_path / "log").start()
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert server.stop() == 0
    assert "Shutting down: Master" in server.log()


@pytest.mark.parametrize("how", [("-w", "2"), ("--workers=3",)])
def test_more_than_one_worker_is_refused_in_memory_mode(how: tuple[str, ...]) -> None:
    port = free_port()
    result = subprocess.run(
        [
            str(VENV_BIN / "gunicorn"),
            "-c",
            "gunicorn.conf.py",
            *how,
            "-b",
            f"127.0.0.1:{port}",
            "wsgi:app",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("membersense: MemberSense keeps sessions in process memory")
    assert "set REDIS_URL" in last and "gunicorn was asked for" in last
    assert sum("REDIS_URL" in line for line in result.stderr.splitlines()) == 1


def test_web_concurrency_is_ignored_in_memory_mode_and_says_so(tmp_path: Path) -> None:
    # Heroku-style platforms set WEB_CONCURRENCY on their own: the Procfile deploy must work.
    server = GunicornServer({"WEB_CONCURRENCY": "4"}, log_path=tmp_path / "log").start()
    try:
        assert requests.get(f"{server.base_url}/_ah/health", timeout=5).status_code == 200
        assert server.process is not None
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
        assert len(children.read_text().split()) == 1
    finally:
        server.stop()
    assert "WEB_CONCURRENCY=4 is ignored in memory mode" in server.log()


def test_a_bad_setting_stops_start_up_with_one_line() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": str(VENV_BIN), "RATE_LIMIT_MAX_REQUESTS": "lots"},
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "membersense: RATE_LIMIT_MAX_REQUESTS must be an integer >= 1, got 'lots'"
    )
