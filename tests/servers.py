"""Real servers for tests: gunicorn (with the project's gunicorn.conf.py) on a free port.

Kept out of conftest so any test module (and benchmarks) can import it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

__all__ = [
    "ROOT",
    "GunicornServer",
    "RawResponse",
    "connect",
    "exchange",
    "free_port",
    "parse_responses",
    "wait_for_health",
]


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(
    base_url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30.0
) -> None:
    """Poll ``/_ah/health`` until it answers 200; fail early if *process* died."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before becoming healthy")
        try:
            if requests.get(f"{base_url}/_ah/health", timeout=2).status_code == 200:
                return
        except requests.RequestException as exc:
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} not healthy after {timeout}s: {last_error!r}")


class GunicornServer:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` in a subprocess, as deployed.

    *env* is added to a clean copy of the environment (PORT is chosen here).
    Output goes to a log file so tests can assert on what the server logged.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        log_path: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PORT": str(self.port), "LOG_FORMAT": "json", **(env or {})}
        self.args = args
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    def start(self, timeout: float = 30.0) -> GunicornServer:
        """Start gunicorn and wait until the health check answers."""
        # Closed by stop(): the file outlives this method.
        self._log_file = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", *self.args, "wsgi:app"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_health(self.base_url, self.process, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a graceful stop, as Cloud Run and Docker do) and wait; return the exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        if self._log_file not in (None, subprocess.DEVNULL):
            self._log_file.close()  # type: ignore[union-attr]
        self._log_file = None
        return code

    def log(self) -> str:
        """What the server has written so far."""
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- raw HTTP over a socket, for what an HTTP library would not send or would hide ----


@dataclass
class RawResponse:
    """One HTTP response as it came over the wire."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def connect(base_url: str, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the server at *base_url*."""
    parts = urlsplit(base_url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def exchange(base_url: str, request: bytes, timeout: float = 10.0) -> list[RawResponse]:
    """Send *request* bytes, read until the server closes, and parse every response."""
    with connect(base_url, timeout) as sock:
        sock.sendall(request)
        return parse_responses(read_until_closed(sock))


def parse_responses(data: bytes) -> list[RawResponse]:
    """Split a byte stream into HTTP/1.1 responses (Content-Length framed or bodiless)."""
    responses = []
    while data:
        head, separator, data = data.partition(b"\r\n\r\n")
        assert separator, f"incomplete response head: {head[:200]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        response = RawResponse(int(status_line.split(" ", 2)[1]))
        for line in lines:
            name, _, value = line.partition(":")
            response.headers[name.strip().lower()] = value.strip()
        assert "chunked" not in response.headers.get("transfer-encoding", ""), "not supported"
        length = int(response.headers.get("content-length", "0"))
        if response.status in (204, 304) or response.status < 200:
            length = 0
        response.body, data = data[:length], data[length:]
        responses.append(response)
    return responses
