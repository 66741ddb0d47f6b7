"""Shared fixtures: an app wired to the fake Discord, a client, a clock, logins."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from membersense import create_app, extensions
from tests.fakes import FakeClock, FakeConnector
from tests.servers import free_port

# Every response a test sees is checked against the OpenAPI document (tests/contract.py).
pytest_plugins = ["tests.contract"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def connector() -> FakeConnector:
    return FakeConnector()


@pytest.fixture
def log_stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def make_app(connector: FakeConnector, clock: FakeClock,
             log_stream: io.StringIO) -> Iterator[Callable[..., Flask]]:
    """Build apps wired to the fake Discord; every one is shut down afterwards."""
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        app = create_app({"DISCORD_CONNECTOR": connector, "CLOCK": clock,
                          "LOG_STREAM": log_stream, **config})
        apps.append(app)
        return app

    yield factory
    for app in apps:
        extensions.shutdown(app)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def login(client: FlaskClient) -> Callable[..., str]:
    """Log a token in through the API and return the session id."""

    def do_login(token: str = "good-token", test_client: FlaskClient | None = None) -> str:
        response = (test_client or client).post("/api/auth/login", json={"token": token})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["sessionId"]

    return do_login


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for tests: the machine's on 127.0.0.1:6379, else a throwaway redis-server."""
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1).ping()
        yield "redis://127.0.0.1:6379/0"
        return
    except redis.RedisError:
        pass
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no Redis on 127.0.0.1:6379 and no redis-server to start one")
    port = free_port()
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        process.wait(10)
