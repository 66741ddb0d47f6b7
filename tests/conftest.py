"""Shared fixtures: an app wired to the fake Discord, a client, a clock, logins."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from membersense import create_app, runtime_of
from membersense.logs import configure_logging
from tests.fakes import FakeClock, FakeDiscord
from tests.redis_support import (
    SHARED_URL,
    RedisServer,
    delete_prefix,
    new_prefix,
    shared_redis_alive,
)

# Every response a test sees is checked against the OpenAPI document (tests/contract.py).
pytest_plugins = ["tests.contract"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def discord() -> FakeDiscord:
    return FakeDiscord()


@pytest.fixture
def log_stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def make_app(
    discord: FakeDiscord, clock: FakeClock, log_stream: io.StringIO
) -> Iterator[Callable[..., Flask]]:
    """Build apps wired to the fake Discord, logging to ``log_stream``; every one is
    closed afterwards."""
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        app = create_app(config, discord=discord, clock=clock)
        configure_logging(app.config["SETTINGS"], log_stream)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        runtime_of(app).close()


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
    """A Redis for tests: the machine's on 127.0.0.1:6379, else a throwaway redis-server.

    Without either, the test is skipped with the reason, except in CI (``CI`` set),
    where Redis is part of the machine and its absence is a failure.
    """
    if shared_redis_alive():
        yield SHARED_URL
        return
    if shutil.which("redis-server") is None:
        message = "no Redis on 127.0.0.1:6379 and no redis-server to start one"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    delete_prefix(redis_url, prefix)
