"""MemberSense's gunicorn worker over real sockets: slow or silent clients never hold a thread.

Each scenario opens more slow connections than the server has threads and
keeps them going for longer than any deadline; gthread's own worker serves
nothing else while they last (it fails every one of these tests), ours cuts
them off at their deadline and serves everyone else meanwhile.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.servers import (
    GunicornServer,
    connect,
    exchange,
    parse_responses,
    read_until_closed,
)

THREADS = 2
HEADER_TIMEOUT_S = 1.0
BODY_MIN_RATE = 100  # bytes per second
#: Slow clients keep going this long unless cut off: far past every deadline.
TRICKLE_FOR_S = 8.0
#: How late a cut-off may come on a loaded machine (deadlines are checked every 0.1 s).
SLACK_S = 3.0

ENV = {
    "THREADS": str(THREADS),
    "REQUEST_HEADER_TIMEOUT": str(int(HEADER_TIMEOUT_S * 1000)),
    "REQUEST_BODY_MIN_RATE": str(BODY_MIN_RATE),
    "MAX_CONTENT_LENGTH": "4096",
    "MAX_CONNECTIONS_PER_IP": "100",
    "RATE_LIMIT_MAX_REQUESTS": "100000",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    log = tmp_path_factory.mktemp("worker") / "server.log"
    with GunicornServer(ENV, log_path=log) as running:
        yield running


class SlowClient(threading.Thread):
    """Opens a connection, sends *first*, then one byte of *drip* every *interval* seconds.

    It stops when the server closes the connection (``cut_after``: seconds from
    the start) or after ``TRICKLE_FOR_S``; ``received`` is what the server sent.
    With *drip* None it sends nothing more (a silent client once *first* is out).
    """

    def __init__(
        self, base_url: str, first: bytes, drip: bytes | None, interval: float = 0.2
    ) -> None:
        super().__init__(daemon=True)
        self.base_url, self.first, self.drip, self.interval = base_url, first, drip, interval
        self.received = b""
        self.cut_after: float | None = None
        self.connected = threading.Event()

    def run(self) -> None:
        with connect(self.base_url) as sock:
            started = time.monotonic()
            if self.first:
                sock.sendall(self.first)
            self.connected.set()
            sent = 0
            while time.monotonic() - started < TRICKLE_FOR_S:
                readable, _, _ = select.select([sock], [], [], self.interval)
                if readable:
                    try:
                        chunk = sock.recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    if not chunk:
                        self.cut_after = time.monotonic() - started
                        return
                    self.received += chunk
                    continue
                if self.drip is not None:
                    try:
                        sock.send(self.drip[sent % len(self.drip) :][:1])
                    except OSError:
                        self.cut_after = time.monotonic() - started
                        return
                    sent += 1


HEAD_START = b"GET /_ah/health HTTP/1.1\r\nHost: test\r\nX-Slow: "
LOGIN = b"POST /api/auth/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
SCENARIOS = {
    "silent": (b"", None),
    "trickled head": (b"GE", b"T /_ah/health HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 200),
    "trickled Content-Length body": (LOGIN + b"Content-Length: 1000\r\n\r\n{", b" "),
    "trickled chunked body": (LOGIN + b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n{", b" "),
    # A first request served at once, then the next one on the same connection trickles.
    "kept-alive, trickled next head": (
        b"GET /_ah/health HTTP/1.1\r\nHost: test\r\n\r\n" + HEAD_START,
        b"a",
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_slow_clients_hold_no_thread_and_are_cut_off(server: GunicornServer, scenario: str) -> None:
    first, drip = SCENARIOS[scenario]
    clients = [SlowClient(server.base_url, first, drip) for _ in range(THREADS + 2)]
    for client in clients:
        client.start()
        client.connected.wait(5)
    time.sleep(0.3)  # every slow client is in

    # Everyone else is served while they last (gthread: not before they stop, or 5 s).
    for _ in range(3):
        response = requests.get(f"{server.base_url}/_ah/health", timeout=HEADER_TIMEOUT_S + 2)
        assert response.status_code == 200
    assert all(client.cut_after is None for client in clients)  # they are still going

    for client in clients:
        client.join(TRICKLE_FOR_S + 2)
        assert client.cut_after is not None, "the server never closed the connection"
        # Heads: the header timeout; bodies: as long again, plus a second per
        # BODY_MIN_RATE bytes sent (a few here).
        assert client.cut_after < 2 * HEADER_TIMEOUT_S + 1 + SLACK_S
        responses = parse_responses(client.received)
        if scenario == "silent":
            assert responses == []  # nothing was asked, nothing is answered
            continue
        if scenario.startswith("kept-alive"):
            assert responses[0].status == 200
            responses = responses[1:]
        assert [r.status for r in responses] == [408]
        assert responses[0].json() == {"error": "Request Timeout"}
        assert responses[0].headers["connection"] == "close"


def test_a_slow_but_steady_client_is_served(server: GunicornServer) -> None:
    body = b'{"token": ""}' + b" " * 40
    with connect(server.base_url) as sock:
        sock.sendall(LOGIN + b"Content-Length: %d\r\n" % len(body))
        time.sleep(HEADER_TIMEOUT_S / 2)
        sock.sendall(b"Connection: close\r\n\r\n")
        # Past the header timeout in all, within the body's allowance.
        for piece in (body[i : i + 10] for i in range(0, len(body), 10)):
            time.sleep(HEADER_TIMEOUT_S / 5)
            sock.sendall(piece)
        responses = parse_responses(read_until_closed(sock))
    assert [(r.status, r.json()) for r in responses] == [(400, {"error": "Token is required"})]


def test_keep_alive_and_pipelined_requests(server: GunicornServer) -> None:
    one = b"GET /_ah/health HTTP/1.1\r\nHost: test\r\n\r\n"
    body = b'{"token": ""}'
    login = LOGIN + b"Content-Length: %d\r\n\r\n" % len(body) + body
    chunked = LOGIN + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"tok\r\n8\r\nen": ""}\r\n0\r\n\r\n'
    last = b"GET /_ah/health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    with connect(server.base_url) as sock:
        sock.sendall(one)  # a kept-alive connection ...
        time.sleep(0.3)
        sock.sendall(login + chunked + one + last)  # ... then four requests in one go
        responses = parse_responses(read_until_closed(sock))
    assert [r.status for r in responses] == [200, 400, 400, 200, 200]
    assert responses[1].json() == responses[2].json() == {"error": "Token is required"}


def test_expect_100_continue(server: GunicornServer) -> None:
    body = b'{"token": ""}'
    with connect(server.base_url) as sock:
        sock.sendall(
            LOGIN + b"Content-Length: %d\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n" % len(body)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before the body is sent
        sock.sendall(body)
        rest = read_until_closed(sock)
    assert [(r.status, r.json()) for r in parse_responses(rest)] == [
        (400, {"error": "Token is required"})
    ]


def test_a_head_that_never_ends_is_431(server: GunicornServer) -> None:
    with connect(server.base_url) as sock:
        sock.sendall(b"GET /_ah/health HTTP/1.1\r\n")
        try:
            for _ in range(100):  # 100 KiB of headers, more than any head may hold
                sock.sendall(b"X-Filler: " + b"a" * 1012 + b"\r\n")
        except OSError:
            pass  # the server answered and closed before it all went out
        responses = parse_responses(read_until_closed(sock))
    assert [(r.status, r.json()) for r in responses] == [
        (431, {"error": "Request header fields too large"})
    ]


def test_a_body_over_the_limit_is_refused_from_its_header(server: GunicornServer) -> None:
    # The body is never read: 413 at once, and the connection closes (its bytes would follow).
    with connect(server.base_url) as sock:
        sock.sendall(LOGIN + b"Content-Length: 5000000\r\n\r\n{")
        responses = parse_responses(read_until_closed(sock))
    assert [(r.status, r.json()) for r in responses] == [
        (413, {"error": "Request Entity Too Large"})
    ]
    assert responses[0].headers["connection"] == "close"


def _kept_alive(base_url: str) -> socket.socket | None:
    """A connection that has been served once and stays open; None if it was refused."""
    sock = connect(base_url)
    sock.sendall(b"GET /_ah/health HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    if data.startswith(b"HTTP/1.1 200"):
        return sock
    sock.close()
    return None


def _eventually_kept_alive(base_url: str) -> socket.socket | None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if (sock := _kept_alive(base_url)) is not None:
            return sock
    return None


def test_connections_per_address_are_capped(tmp_path: Path) -> None:
    env = {**ENV, "MAX_CONNECTIONS_PER_IP": "3"}
    with GunicornServer(env, log_path=tmp_path / "log") as server:
        held: list[socket.socket] = []
        try:
            # Three connections served and kept open (the start-up health check's own
            # connection may still count for a moment: retry until three are held).
            deadline = time.monotonic() + 5
            while len(held) < 3 and time.monotonic() < deadline:
                sock = _kept_alive(server.base_url)
                if sock is not None:
                    held.append(sock)
            assert len(held) == 3
            [refused] = exchange(server.base_url, b"GET /_ah/health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert refused.status == 429
            assert refused.json() == {"error": "Too many connections from this address"}
            assert refused.headers["retry-after"] == "1"
            held.pop().close()  # a slot frees up as soon as the server sees it closed
            again = _kept_alive(server.base_url) or _eventually_kept_alive(server.base_url)
            assert again is not None
            held.append(again)
        finally:
            for sock in held:
                sock.close()


def test_behind_a_proxy_there_is_no_cap_per_address(tmp_path: Path) -> None:
    # Every connection comes from the proxy then; the proxy limits its clients.
    env = {
        **ENV,
        "MAX_CONNECTIONS_PER_IP": "1",
        "TRUSTED_PROXIES": "1",
        "REQUEST_HEADER_TIMEOUT": "10000",
    }
    with (
        GunicornServer(env, log_path=tmp_path / "log") as server,
        connect(server.base_url),
        connect(server.base_url),
    ):
        [served] = exchange(
            server.base_url, b"GET /_ah/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert served.status == 200
