"""Redis mode's parts for the :class:`~membersense.runtime.Runtime`, built in one place."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from membersense.cluster.bus import RedisEventBus
from membersense.cluster.connection import RedisConnection
from membersense.cluster.notices import Notices
from membersense.cluster.sealing import TokenSealer
from membersense.cluster.service import ClusterDiscord
from membersense.cluster.sessions import RedisSessionStore
from membersense.cluster.tickets import RedisTicketStore
from membersense.cluster.webhooks import RedisSubscriptionStore
from membersense.cluster.writer import Writer
from membersense.config import Settings

__all__ = ["ClusterParts", "build"]


@dataclass(frozen=True)
class ClusterParts:
    """What the runtime needs in Redis mode, and how to stop it."""

    redis: RedisConnection
    notices: Notices
    writer: Writer
    sealer: TokenSealer
    store: RedisSessionStore
    bus: RedisEventBus
    discord: ClusterDiscord
    tickets: RedisTicketStore
    subscriptions: RedisSubscriptionStore

    def close_after_discord(self) -> None:
        """Once the Discord service is closed: flush the writes, stop listening, disconnect."""
        self.bus.close()
        self.writer.close()
        self.notices.close()
        self.redis.close()


def build(
    settings: Settings, clock: Callable[[], float] = time.monotonic, **observers: Any
) -> ClusterParts:
    """Redis mode's parts from *settings* (nothing connects until it is used); *observers*
    go to the Discord service (see :class:`~membersense.discord.local.LocalDiscord`)."""
    redis = RedisConnection(settings.redis_url, settings.redis_key_prefix, clock=clock)
    notices = Notices(redis)
    writer = Writer(redis)
    sealer = TokenSealer(settings.session_secret)
    store = RedisSessionStore(
        redis,
        notices,
        sealer,
        idle_timeout=settings.session_timeout_s,
        pending_timeout=settings.pending_timeout_s,
        clock=clock,
    )
    bus = RedisEventBus(
        redis, writer, capacity=settings.event_buffer_size, retention_s=settings.session_timeout_s
    )
    discord = ClusterDiscord(
        settings,
        bus,
        redis=redis,
        notices=notices,
        writer=writer,
        store=store,
        sealer=sealer,
        clock=clock,
        **observers,
    )
    return ClusterParts(
        redis,
        notices,
        writer,
        sealer,
        store,
        bus,
        discord,
        RedisTicketStore(redis),
        RedisSubscriptionStore(redis, notices, writer, sealer),
    )
