"""A fake Discord for unit tests of the HTTP layer only.

Integration tests use the real discord.py bridge against the sandbox; these
doubles just let the blueprints, sessions and error paths be tested without
an event loop. They follow the protocols in membersense.discord.service.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from membersense.discord.service import GuildSummary, JsonDocument
from membersense.errors import NotFound, Unauthorized


class FakeClock:
    """A monotonic clock that moves only when told to (injected wherever time matters)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


@dataclass
class FakeGuild:
    id: int
    name: str
    members: list[dict[str, Any]]
    channels: list[dict[str, Any]]
    messages: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


#: What the real serializers give a user without an avatar of their own.
DEFAULT_AVATAR = "https://cdn.discordapp.com/embed/avatars/0.png"


def make_guild(guild_id: int = 100, name: str = "Test Guild", members: int = 5) -> FakeGuild:
    """A guild whose JSON has the shapes the real serializers produce (the contract checks them)."""
    people = [
        {"id": str(1000 + i), "username": f"user{i}", "displayName": f"User {i}",
         "avatar": DEFAULT_AVATAR, "roles": ["Member", "@everyone"], "role": "Member",
         "joinedAt": "2024-07-21T07:59:32.041Z", "bot": False}
        for i in range(members)
    ]
    channels = [
        {"id": "500", "name": "general", "type": "text", "parentId": None, "position": 0,
         "topic": None},
        {"id": "501", "name": "Voice", "type": "voice", "parentId": None, "position": 1,
         "topic": None},
    ]
    messages = {
        500: [{"id": str(9000 - i), "content": f"message {i}",
               "author": {"id": "1000", "username": "user0", "name": "User 0",
                          "avatar": DEFAULT_AVATAR},
               "timestamp": 1_700_000_000_000 - i, "editedTimestamp": None, "attachments": [],
               "embeds": 0, "replyTo": None} for i in range(150)]
    }
    return FakeGuild(guild_id, name, people, channels, messages)


class FakeService:
    """One fake bot session; records calls and can be told to fail."""

    def __init__(self, guilds: list[FakeGuild], on_close: Callable[[], None] | None = None):
        self._guilds = guilds
        self.closed = False
        self.failed = False
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.fail_with: Exception | None = None
        self._on_close = on_close

    def _guild(self, guild_id: int | None) -> FakeGuild:
        if guild_id is None:
            return self._guilds[0]
        for guild in self._guilds:
            if guild.id == guild_id:
                return guild
        raise NotFound("Guild not found")

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        if self.fail_with is not None:
            raise self.fail_with

    def guilds(self) -> list[GuildSummary]:
        return [GuildSummary(str(g.id), g.name, len(g.members), None) for g in self._guilds]

    def members(self, guild_id: int | None, *, limit: int | None = None,
                after: int | None = None) -> JsonDocument:
        self._record("members", guild_id, limit=limit, after=after)
        people = self._guild(guild_id).members
        if after is not None:
            people = [m for m in people if int(m["id"]) > after]
        if limit is not None:
            people = people[:limit]
        body = json.dumps(people).encode()
        return JsonDocument(body, hashlib.sha256(body).hexdigest()[:16])

    def channels(self, guild_id: int | None, *, kind: str = "text") -> list[dict[str, Any]]:
        self._record("channels", guild_id, kind=kind)
        return [c for c in self._guild(guild_id).channels if kind == "all" or c["type"] == kind]

    def messages(self, guild_id: int | None, channel_id: int, *, limit: int = 100,
                 before: int | None = None, after: int | None = None,
                 around: int | None = None) -> list[dict[str, Any]]:
        self._record("messages", guild_id, channel_id, limit=limit, before=before, after=after,
                     around=around)
        history = self._guild(guild_id).messages.get(channel_id)
        if history is None:
            raise NotFound("Channel not found")
        if before is not None:
            history = [m for m in history if int(m["id"]) < before]
        return history[:limit]

    def close(self) -> None:
        self.closed = True
        if self._on_close:
            self._on_close()


class FakeConnector:
    """Logs in tokens it knows; the rest get 401 as Discord would."""

    def __init__(self, tokens: dict[str, list[FakeGuild]] | None = None) -> None:
        self.tokens = tokens if tokens is not None else {"good-token": [make_guild()]}
        self.services: list[FakeService] = []
        self.closed = False
        self.gate: threading.Event | None = None  # set to hold logins until released
        self.fail_with: Exception | None = None

    def connect(self, token: str) -> FakeService:
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        if token not in self.tokens:
            raise Unauthorized("Invalid Discord token")
        service = FakeService(self.tokens[token])
        self.services.append(service)
        return service

    def close(self) -> None:
        self.closed = True
