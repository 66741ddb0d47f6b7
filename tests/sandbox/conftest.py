"""Fixtures for sandbox tests: sandboxes on background threads, and discord.py pointed at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer

#: The bot token of sandboxes made by these fixtures (unless a test passes its own ``tokens``).
TEST_TOKEN = "sandbox-test-token"

#: Small worlds start fast; tests that need size ask for it.
SMALL_WORLD: dict[str, Any] = {
    "port": 0,
    "members": 50,
    "channels": 3,
    "messages": 30,
    "tokens": (TEST_TOKEN,),
}


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxServer]]:
    """``make(**config_overrides)`` starts a sandbox (small world on a free port); all are stopped afterwards."""
    servers: list[SandboxServer] = []

    def make(**overrides: Any) -> SandboxServer:
        server = SandboxServer(SandboxConfig(**{**SMALL_WORLD, **overrides}))
        servers.append(server)
        return server.start()

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., SandboxServer]) -> SandboxServer:
    """A running sandbox with the small default world and :data:`TEST_TOKEN`."""
    return sandbox_factory()


@pytest.fixture
def point_discord() -> Iterator[Callable[[SandboxServer], None]]:
    """``point(sandbox)`` aims discord.py's process-wide REST base and gateway URL at ``sandbox``; undone afterwards."""
    import discord.gateway
    import discord.http
    import yarl

    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY

    def point(server: SandboxServer) -> None:
        discord.http.Route.BASE = server.api_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)

    yield point
    discord.http.Route.BASE = old_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


class RestClient:
    """Plain HTTP to one sandbox: REST calls as a bot (``get``/``post``/...) and control calls."""

    def __init__(self, session: requests.Session, server: SandboxServer, token: str | None) -> None:
        self.session = session
        self.server = server
        self.token = token

    def request(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """``METHOD /api/v10{path}`` with ``Authorization: Bot <token>`` (the client's token by default)."""
        headers = dict(kwargs.pop("headers", {}) or {})
        auth = token if token is not None else self.token
        if auth is not None and "Authorization" not in headers:
            headers["Authorization"] = f"Bot {auth}"
        return self.session.request(
            method, self.server.api_url + path, headers=headers, timeout=30, **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def control(self, method: str, path: str, body: Any = None) -> requests.Response:
        """``METHOD /_sandbox{path}`` with a JSON body."""
        return self.session.request(
            method, self.server.base_url + "/_sandbox" + path, json=body, timeout=30
        )


@pytest.fixture
def rest_client() -> Iterator[Callable[..., RestClient]]:
    """``client(sandbox, token=TEST_TOKEN)``: a :class:`RestClient`; its HTTP session is closed afterwards."""
    session = requests.Session()

    def make(server: SandboxServer, token: str | None = TEST_TOKEN) -> RestClient:
        return RestClient(session, server, token)

    yield make
    session.close()
