"""Every setting of the sandbox (the local Discord emulator) in one dataclass.

The CLI, the test fixtures and the benchmarks all build a :class:`SandboxConfig`;
nothing else in the sandbox reads flags or environment variables.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Used when no ``--token`` is given; printed on start-up.  It is a sandbox-only
#: fake token and grants nothing on the real Discord.
DEMO_TOKEN = "sandbox-demo-token"


@dataclass
class SandboxConfig:
    """Settings of one sandbox instance (world shape, protocol timings, limits).

    Defaults match what Discord does, except where noted (rate limits are more
    generous, the invalid-request guard is off).
    """

    host: str = "127.0.0.1"
    #: 0 binds a free port (the bound port is then reported by the server).
    port: int = 8765
    #: One bot per token; empty means ``(DEMO_TOKEN,)``.
    tokens: tuple[str, ...] = ()
    #: Human members of the generated guild (the bots join on top of these).
    members: int = 1000
    #: Text channels of the generated guild (plus categories and a few voice channels).
    channels: int = 10
    #: Messages of history per text channel.
    messages: int = 500
    seed: int = 0
    #: A scenario JSON file (several guilds and bots); overrides the shape flags above.
    scenario: str | None = None

    # Gateway knobs (used by gateway.py).
    heartbeat_interval_ms: int = 41250
    #: How long after a heartbeat its ACK leaves: Discord's answer always takes a network
    #: round trip, and discord.py records when it sent a heartbeat only after the send
    #: returned, so an ACK sent at once over loopback can be read before that record
    #: (it then measures a whole interval of latency and logs "Can't keep up").
    heartbeat_ack_delay_ms: int = 40
    #: How long one bot must wait between two "all members" requests of one guild.
    member_request_cooldown_s: float = 30.0
    #: IDENTIFYs per bot per ``session_start_reset_s`` (Discord: 1000 a day).
    session_start_limit: int = 1000
    session_start_reset_s: float = 86400.0
    max_concurrency: int = 1

    # REST rate limits: per bot, per route template + major parameter.
    rate_limit_per_route: int = 50
    rate_limit_window_s: float = 1.0
    #: Per-route overrides: ``{"POST /channels/{channel_id}/messages": (5, 5.0)}``.
    route_limits: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: Requests per second per bot across all routes; None disables it (Discord: 50).
    global_rate_limit: int | None = None

    #: Discord/Cloudflare's invalid request limit: more than this many 401/403/429
    #: answers to one client IP within ``invalid_request_window_s`` bans the IP for
    #: ``invalid_request_ban_s``.  None turns the guard off (Discord: 10 000 / 600 s).
    invalid_request_limit: int | None = None
    invalid_request_window_s: float = 600.0
    invalid_request_ban_s: float = 60.0

    #: Monotonic clock in seconds; tests inject a fake one to skip waiting.
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.tokens = tuple(self.tokens)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        for name in ("members", "channels", "messages"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.heartbeat_interval_ms <= 0:
            raise ValueError("heartbeat_interval_ms must be positive")
        if self.heartbeat_ack_delay_ms < 0:
            raise ValueError("heartbeat_ack_delay_ms must be >= 0")
        if self.rate_limit_per_route < 1 or self.rate_limit_window_s <= 0:
            raise ValueError("rate limits must be positive")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("tokens must be distinct")
        if any(not t or any(c.isspace() for c in t) for t in self.tokens):
            raise ValueError("tokens must be non-empty and contain no whitespace")

    @property
    def effective_tokens(self) -> tuple[str, ...]:
        """The tokens to create bots for (the demo token when none were given)."""
        return self.tokens or (DEMO_TOKEN,)

    def replace(self, **changes: object) -> SandboxConfig:
        """Return a copy with ``changes`` applied (validated again)."""
        # Typed by field in dataclasses' stubs; the fields validate themselves in __post_init__.
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
