"""deploy/nginx.conf in a real nginx, in front of MemberSense under gunicorn (TRUSTED_PROXIES=1).

The file runs as shipped but for the three lines it marks (ports, access log):
see tests/hosts.py. uWSGI behind the same file: tests/integration/test_uwsgi.py.
"""

from __future__ import annotations

import gzip
import http.client
import http.server
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from membersense.sandbox.server import SandboxServer
from tests.hosts import NginxServer, nginx_site, wait_for_port
from tests.integration.conftest import MemberSense
from tests.integration.support import Api, Control, walk_the_api
from tests.servers import ROOT, free_port

NGINX_CONF = (ROOT / "deploy" / "nginx.conf").read_text()


@pytest.fixture(scope="module")
def upstream(membersense_factory: Callable[..., MemberSense]) -> MemberSense:
    return membersense_factory(TRUSTED_PROXIES="1")


def nginx_in_front(port: int, logs: Path) -> NginxServer:
    logs.mkdir(exist_ok=True)
    return NginxServer(port, logs)


@pytest.fixture(scope="module")
def nginx(upstream: MemberSense, module_tmp: Path) -> Iterator[NginxServer]:
    server = nginx_in_front(upstream.server.port, module_tmp / "nginx").start()
    yield server
    server.stop()


@pytest.fixture
def api(nginx: NginxServer) -> Iterator[Api]:
    client = Api(nginx.base_url)
    yield client
    client.close()


def test_the_api_end_to_end_through_nginx(api: Api, nginx: NginxServer) -> None:
    walk_the_api(api)
    health = requests.get(f"{nginx.base_url}/_ah/health", timeout=10)
    assert health.headers["Server"] == "nginx"  # server_tokens off: no version


def test_the_access_log_has_no_query_strings_or_session_ids(api: Api, nginx: NginxServer) -> None:
    session = api.login()
    response = api.get("/api/messages", session, channelId="123456789012345678", limit=3)
    assert response.status_code == 404
    api.logout(session)
    log = nginx.access_log.read_text()
    lines = [line for line in log.splitlines() if "/api/messages" in line]
    assert lines, log
    assert '"GET /api/messages HTTP/1.1" 404' in lines[-1]
    assert "channelId" not in log and "limit=" not in log and session not in log


def test_gzip_member_lists_pass_through_byte_for_byte(api: Api, upstream: MemberSense) -> None:
    session = api.login()
    try:
        direct = Api(upstream.server.base_url)
        through, straight = (
            client.http.get(
                f"{client.base_url}/api/members",
                stream=True,
                timeout=30,
                headers={"Authorization": session, "Accept-Encoding": "gzip"},
            )
            for client in (api, direct)
        )
        bodies = [r.raw.read(decode_content=False) for r in (through, straight)]
        direct.close()
    finally:
        api.logout(session)
    assert through.status_code == straight.status_code == 200
    assert through.headers["Content-Encoding"] == "gzip"
    assert through.headers["ETag"] == straight.headers["ETag"]  # strong: not re-encoded
    assert not through.headers["ETag"].startswith("W/")
    assert bodies[0] == bodies[1]
    assert gzip.decompress(bodies[0]).startswith(b"[")


def test_membersense_errors_pass_through_untouched(api: Api, sandbox: SandboxServer) -> None:
    # MemberSense's own 502 (Discord answered 500) keeps its message: nginx's pages only
    # replace errors nginx makes itself.
    session = api.login()
    control = Control(sandbox.base_url)
    channel = next(
        c["id"] for c in api.get("/api/channels", session).json() if c["name"] != "staff-only"
    )
    control.request("POST", "/faults", status=500, count=50, path="/channels/*")
    try:
        response = api.get("/api/messages", session, channelId=channel, limit=1)
    finally:
        control.request("DELETE", "/faults")
        control.close()
        api.logout(session)
    assert response.status_code == 502
    assert response.json()["error"] != "Bad Gateway"
    assert "X-Request-ID" in response.headers  # MemberSense's, not nginx's


@pytest.mark.parametrize(
    ("request_kwargs", "status", "error"),
    [
        (
            {"method": "POST", "url": "/api/auth/login", "data": b"x" * 70_000},
            413,
            "Request Entity Too Large",
        ),
        (
            {"method": "GET", "url": "/_ah/health", "headers": {"X-Big": "a" * 9000}},
            400,
            "Bad Request",
        ),
    ],
)
def test_requests_nginx_refuses_get_json(
    nginx: NginxServer, request_kwargs: dict, status: int, error: str
) -> None:
    kwargs = dict(request_kwargs)
    url = nginx.base_url + kwargs.pop("url")
    response = requests.request(url=url, timeout=10, **kwargs)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": error}


def test_membersense_down_is_a_json_502(
    membersense_factory: Callable[..., MemberSense], module_tmp: Path
) -> None:
    backend = membersense_factory(TRUSTED_PROXIES="1")
    front = nginx_in_front(backend.server.port, module_tmp / "nginx-502").start()
    try:
        assert requests.get(f"{front.base_url}/_ah/health", timeout=10).status_code == 200
        assert backend.stop() == 0
        response = requests.get(f"{front.base_url}/api/members", timeout=10)
        # A page on another origin can read it, as it reads MemberSense's own errors.
        cross_origin = requests.get(
            f"{front.base_url}/api/members", headers={"Origin": "https://app.example"}, timeout=10
        )
    finally:
        front.stop()
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": "Bad Gateway"}
    assert "Access-Control-Allow-Origin" not in response.headers  # only with Origin
    assert cross_origin.status_code == 502 and cross_origin.json() == {"error": "Bad Gateway"}
    assert cross_origin.headers["Access-Control-Allow-Origin"] == "*"


def _get(port: int, path: str, source: str, headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("GET", path, headers=headers or {})
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_rate_limit_keys_on_the_client_nginx_saw(
    membersense_factory: Callable[..., MemberSense], module_tmp: Path
) -> None:
    backend = membersense_factory(TRUSTED_PROXIES="1", RATE_LIMIT_MAX_REQUESTS="5")
    front = nginx_in_front(backend.server.port, module_tmp / "nginx-ratelimit").start()
    try:
        # A client sending a new X-Forwarded-For each time is still one client...
        spoofed = [
            _get(front.port, "/api/channels", "127.0.0.1", {"X-Forwarded-For": f"203.0.113.{n}"})
            for n in range(6)
        ]
        # ...and a client at another address has a budget of its own.
        other = _get(front.port, "/api/channels", "127.0.0.2")
    finally:
        front.stop()
    assert spoofed == [401] * 5 + [429]
    assert other == 401


class _SlowStream(http.server.BaseHTTPRequestHandler):
    """An upstream that sends one event, then holds the response open until released."""

    release = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b"data: first\n\n")
        self.wfile.flush()
        self.release.wait(30)
        self.wfile.write(b"data: last\n\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stream_upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _SlowStream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    _SlowStream.release.set()
    server.shutdown()
    server.server_close()


def test_event_streams_are_not_buffered(stream_upstream: int, module_tmp: Path) -> None:
    front = nginx_in_front(stream_upstream, module_tmp / "nginx-stream")
    front.launch()
    try:
        wait_for_port(front.port)
        _SlowStream.release.clear()
        with requests.get(f"{front.base_url}/api/events", stream=True, timeout=10) as stream:
            assert next(stream.iter_content(chunk_size=None)) == b"data: first\n\n"
        # Elsewhere nginx buffers (slow readers never hold a MemberSense thread): the same
        # upstream sends nothing through until it has finished.
        with pytest.raises(requests.ReadTimeout):
            requests.get(f"{front.base_url}/api/members", timeout=2)
        _SlowStream.release.set()
    finally:
        front.stop()


def test_the_shipped_file_keeps_its_promises() -> None:
    """What the tests above cannot reach in seconds: timeouts and limits, as configured."""
    events = re.search(r"location /api/events \{(.*?)\}", NGINX_CONF, re.S)
    assert events is not None
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", events.group(1))
    assert read_timeout and int(read_timeout.group(1)) > 2 * 15  # the stream's heartbeat: 15 s
    assert "proxy_buffering off;" in events.group(1)
    server_read = re.search(r"^    proxy_read_timeout (\d+)s;", NGINX_CONF, re.M)
    assert server_read and int(server_read.group(1)) > 30  # LOGIN_TIMEOUT's default
    assert re.search(r"client_header_timeout \d+s;", NGINX_CONF)
    assert re.search(r"client_body_timeout \d+s;", NGINX_CONF)
    assert "client_max_body_size 64k;" in NGINX_CONF  # MAX_CONTENT_LENGTH's default
    assert "proxy_http_version 1.1;" in NGINX_CONF
    assert "$request_uri" not in NGINX_CONF and "$args" not in NGINX_CONF  # no query strings


def test_only_the_marked_lines_change() -> None:
    site = nginx_site(1234, 5678, Path("/tmp/x.log"))
    changed = [
        (a, b) for a, b in zip(NGINX_CONF.splitlines(), site.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 3 and all("# <-" in before for before, _ in changed)
