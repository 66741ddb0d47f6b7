"""What every sandbox HTTP handler shares, stored on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.faults import FaultInjector
from membersense.sandbox.guard import InvalidRequestGuard
from membersense.sandbox.ratelimits import RateLimiter
from membersense.sandbox.world import World


@dataclass
class SandboxState:
    """The world and the REST-side services of one sandbox."""

    world: World
    config: SandboxConfig
    ratelimits: RateLimiter
    faults: FaultInjector
    guard: InvalidRequestGuard
    #: The gateway engine (membersense.sandbox.gateway.Gateway), None when it is not available.
    gateway: Any | None = None

    @classmethod
    def create(
        cls, world: World, config: SandboxConfig, gateway: Any | None = None
    ) -> SandboxState:
        """The state with fresh services configured from ``config``."""
        return cls(
            world=world,
            config=config,
            ratelimits=RateLimiter(config),
            faults=FaultInjector(),
            guard=InvalidRequestGuard(
                config.invalid_request_limit,
                config.invalid_request_window_s,
                config.invalid_request_ban_s,
                config.clock,
            ),
            gateway=gateway,
        )


STATE = web.AppKey("membersense_sandbox_state", SandboxState)
