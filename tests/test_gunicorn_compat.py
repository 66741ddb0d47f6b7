"""What MemberSense takes from gunicorn's internals, and the errors gunicorn itself answers.

The first test fails when an upgrade of gunicorn drops or renames an internal
that membersense.gunicorn_compat relies on; the rest check, over real sockets,
that every error gunicorn answers on its own (before the app sees a request)
is JSON with a fixed message, and never echoes the client.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterator

import gunicorn
import pytest
from gunicorn.workers.gthread import ThreadWorker

from membersense.gunicorn_compat import (
    INSTANCE_ATTRIBUTES,
    INTERNALS,
    MALFORMED_BODY_ERRORS,
    BufferedThreadWorker,
)
from tests.servers import GunicornServer, exchange


def test_every_internal_relied_on_is_there() -> None:
    missing = [
        f"{getattr(owner, '__name__', owner)}.{name}"
        for owner, name in INTERNALS
        if not hasattr(owner, name)
    ]
    assert missing == []
    assert gunicorn.version_info[0] == 27  # setup.cfg: >=27,<28


def test_every_instance_attribute_relied_on_is_still_set() -> None:
    missing = [
        f"{owner.__name__}.{name}"
        for owner, name in INSTANCE_ATTRIBUTES
        if f"self.{name} =" not in inspect.getsource(owner)
    ]
    assert missing == []


def test_the_overridden_methods_keep_their_signatures() -> None:
    # gthread calls these on our worker; a changed signature would break it at run time.
    for name in (
        "accept",
        "finish_request",
        "handle",
        "handle_error",
        "murder_pending",
        "wait_for_and_dispatch_events",
        "load_wsgi",
        "init_process",
    ):
        ours = inspect.signature(getattr(BufferedThreadWorker, name))
        theirs = inspect.signature(getattr(ThreadWorker, name))
        assert list(ours.parameters) == list(theirs.parameters), name


def test_malformed_body_errors_are_exceptions() -> None:
    assert all(issubclass(kind, Exception) for kind in MALFORMED_BODY_ERRORS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    log = tmp_path_factory.mktemp("compat") / "server.log"
    with GunicornServer({"RATE_LIMIT_MAX_REQUESTS": "100000"}, log_path=log) as running:
        yield running


MARK = b"ClientText"  # must never come back, nor reach the log
CASES = [
    (
        "header over 8190 bytes",
        b"GET /_ah/health HTTP/1.1\r\nHost: t\r\nX-" + MARK + b": " + b"a" * 9000 + b"\r\n\r\n",
        431,
        "Request header fields too large",
    ),
    (
        "request line over 4094 bytes",
        b"GET /" + MARK + b"a" * 5000 + b" HTTP/1.1\r\n\r\n",
        414,
        "Request line too long",
    ),
    (
        "NUL in a header",
        b"GET /_ah/health HTTP/1.1\r\nHost: t\r\nX-" + MARK + b": a\x00b\r\n\r\n",
        400,
        "Invalid header",
    ),
    (
        "Content-Length and Transfer-Encoding",
        (
            b"POST /api/auth/login HTTP/1.1\r\nHost: t\r\n"
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        400,
        "Invalid Content-Length or Transfer-Encoding",
    ),
    (
        "bad header name",
        b"GET /_ah/health HTTP/1.1\r\nHost: t\r\n" + MARK + b"<x>: 1\r\n\r\n",
        400,
        "Invalid header",
    ),
    ("bad method", MARK + b"<> / HTTP/1.1\r\nHost: t\r\n\r\n", 400, "Invalid request method"),
    (
        "bad request line",
        b"GET /" + MARK + b"\x7f HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
        "Invalid request line",
    ),
    ("bad version", b"GET / HTTP/" + MARK + b"\r\nHost: t\r\n\r\n", 400, "Invalid HTTP version"),
    (
        "unknown transfer coding",
        b"POST /api/auth/login HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: " + MARK + b", chunked\r\n\r\n0\r\n\r\n",
        501,
        "Unsupported transfer coding",
    ),
    (
        "bad Expect",
        b"GET /_ah/health HTTP/1.1\r\nHost: t\r\nExpect: " + MARK + b"\r\n\r\n",
        417,
        "Expectation failed",
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_gunicorn_s_own_errors_are_json_with_fixed_messages(
    server: GunicornServer, request_bytes: bytes, status: int, message: str
) -> None:
    [response] = exchange(server.base_url, request_bytes)
    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": message}
    assert response.headers["connection"] == "close"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert len(response.headers["x-request-id"]) == 21
    assert MARK not in response.body
    deadline = time.monotonic() + 5
    while message not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = [json.loads(line) for line in server.log().splitlines() if message in line]
    assert logged and logged[-1]["severity"] == "WARNING"
    assert MARK.decode() not in server.log()


def test_no_version_in_the_server_header(server: GunicornServer) -> None:
    [response] = exchange(
        server.base_url, b"GET /_ah/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert response.status == 200
    assert response.headers["server"] == "gunicorn"
    assert gunicorn.__version__ not in response.headers["server"]
