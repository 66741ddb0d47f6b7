"""The Discord layer in the test process, against a sandbox: a real Runtime with the real
discord.py service, and small handles to drive it as the API would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from membersense.config import load_settings
from membersense.discord.connection import BotConnection
from membersense.discord.local import LocalDiscord
from membersense.discord.service import JsonDocument
from membersense.runtime import Runtime
from membersense.sandbox.server import SandboxServer
from membersense.sessions import SessionRecord

#: Settings of these tests (on top of the sandbox's URLs).
BASE = {
    "DISCORD_TIMEOUT": "3000",
    "LOGIN_TIMEOUT": "10000",
    "CONNECTION_LINGER": "0",
    "MAX_SESSIONS_PER_TOKEN": "1000",
    "MAX_SESSIONS_PER_IP": "1000",
}


class Session:
    """One logged-in session, with the reads the API would make for it."""

    def __init__(self, bots: Bots, record: SessionRecord) -> None:
        self.bots = bots
        self.record = record

    @property
    def bot(self) -> str:
        return self.record.fingerprint

    def _guild(self, guild_id: int | str | None) -> int:
        return int(guild_id) if guild_id is not None else int(self.record.guild_ids[0])

    def members(self, guild_id: int | str | None = None, **kwargs: Any) -> JsonDocument:
        return self.bots.discord.members(self.bot, self._guild(guild_id), **kwargs)

    def channels(self, guild_id: int | str | None = None, kind: str = "text") -> list[dict]:
        return self.bots.discord.channels(self.bot, self._guild(guild_id), kind=kind)  # type: ignore[arg-type]

    def messages(
        self, channel_id: int | str, guild_id: int | str | None = None, **kwargs: Any
    ) -> list[dict]:
        return self.bots.discord.messages(
            self.bot, self._guild(guild_id), int(channel_id), **kwargs
        )

    def alive(self) -> bool:
        return self.bots.runtime.sessions.authenticate(self.record.id) is not None

    def logout(self) -> bool:
        return self.bots.runtime.sessions.logout(self.record.id)


class Bots:
    """A Runtime wired to *sandbox* (``CONNECTION_LINGER`` 0 unless given)."""

    def __init__(
        self, sandbox: SandboxServer, *, clock: Callable[[], float] | None = None, **settings: str
    ) -> None:
        self.settings = load_settings(
            environ={},
            overrides={
                **BASE,
                "DISCORD_API_BASE": sandbox.api_url,
                "DISCORD_GATEWAY_URL": sandbox.gateway_url,
                **settings,
            },
        )
        self.runtime = Runtime(self.settings, clock=clock)
        assert isinstance(self.runtime.discord, LocalDiscord)
        self.discord: LocalDiscord = self.runtime.discord

    def login(self, token: str, client: str | None = None) -> Session:
        record, _ = self.runtime.sessions.login(token, client)
        return Session(self, record)

    def connection(self, token_or_bot: str) -> BotConnection:
        from membersense.discord.tokens import fingerprint

        found = self.discord.pool.get(token_or_bot) or self.discord.pool.get(
            fingerprint(token_or_bot)
        )
        assert found is not None, "no connection for that bot"
        return found

    def on_loop(self, fn: Callable[[], Any], timeout: float = 10) -> Any:
        """Run *fn* (sync or async) on the Discord loop; its result."""

        async def call() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return self.discord.bridge.call(call, timeout=timeout)

    def loop_tasks(self) -> list[str]:
        """Names of the tasks on the Discord loop (the caller's own call excluded)."""
        if not self.discord.bridge.running:
            return []

        async def names() -> list[str]:
            current = asyncio.current_task()
            return sorted(t.get_name() for t in asyncio.all_tasks() if t is not current)

        return self.discord.bridge.call(names, timeout=5)

    def close(self) -> None:
        self.runtime.close()


def thread_names() -> list[str]:
    return sorted(t.name.split(":")[0] for t in threading.enumerate())
