"""Fixtures for sandbox tests: sandboxes on background threads, and discord.py pointed at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer

#: The bot token of sandboxes made by these fixtures (unless a test passes its own ``tokens``).
TEST_TOKEN = "sandbox-test-token"

#: Small worlds start fast; tests that need size ask for it.
SMALL_WORLD: dict[str, Any] = {"port": 0, "members": 50, "channels": 3, "messages": 30, "tokens": (TEST_TOKEN,)}


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
