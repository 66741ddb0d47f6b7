"""A fake Discord for unit tests of the HTTP layer only.

Integration tests use the real discord.py service against the sandbox; this
double just lets the blueprints, sessions and error paths be tested without
an event loop. It follows :class:`membersense.discord.service.DiscordService`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from membersense.discord.errors import (
    BotReleased,
    ChannelNotFound,
    DiscordError,
    Failure,
    GuildNotFound,
    InvalidToken,
    MessageNotFound,
    NoGuilds,
)
from membersense.discord.service import BotLogin, GuildSummary, JsonDocument
from membersense.discord.tokens import fingerprint


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
        {
            "id": str(1000 + i),
            "username": f"user{i}",
            "displayName": f"User {i}",
            "avatar": DEFAULT_AVATAR,
            "roles": ["Member", "@everyone"],
            "role": "Member",
            "joinedAt": "2024-07-21T07:59:32.041Z",
            "bot": False,
            "roleColor": None,
        }
        for i in range(members)
    ]
    channels = [
        {
            "id": "500",
            "name": "general",
            "type": "text",
            "parentId": None,
            "position": 0,
            "topic": None,
            "canSend": True,
        },
        {
            "id": "501",
            "name": "Voice",
            "type": "voice",
            "parentId": None,
            "position": 1,
            "topic": None,
            "canSend": False,
        },
    ]
    messages = {
        500: [
            {
                "id": str(9000 - i),
                "channelId": "500",
                "content": f"message {i}",
                "author": {
                    "id": "1000",
                    "username": "user0",
                    "name": "User 0",
                    "avatar": DEFAULT_AVATAR,
                },
                "timestamp": 1_700_000_000_000 - i,
                "editedTimestamp": None,
                "attachments": [],
                "embeds": 0,
                "replyTo": None,
            }
            for i in range(150)
        ]
    }
    return FakeGuild(guild_id, name, people, channels, messages)


class FakeDiscord:
    """Bots it knows log in; the rest get 401 as Discord would.

    Records every call; ``fail_with`` makes reads fail, ``gate`` holds logins
    until set, ``failures`` marks bots whose connection failed for good.
    """

    def __init__(self, tokens: dict[str, list[FakeGuild]] | None = None) -> None:
        self.tokens = tokens if tokens is not None else {"good-token": [make_guild()]}
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.logins: Counter[str] = Counter()  # live sessions per bot, as the service sees them
        self.failures: dict[str, Failure] = {}
        self.fail_with: DiscordError | None = None
        self.login_fails_with: BaseException | None = None
        self.gate: threading.Event | None = None
        self.closed = False
        self.refusing = False
        self._lock = threading.Lock()
        self._sent: dict[tuple[int, str], dict[str, Any]] = {}  # by (channel, idempotency key)

    def _guilds(self, bot: str) -> list[FakeGuild]:
        for token, guilds in self.tokens.items():
            if fingerprint(token) == bot:
                return guilds
        raise BotReleased()

    def _guild(self, bot: str, guild_id: int) -> FakeGuild:
        for guild in self._guilds(bot):
            if guild.id == guild_id:
                return guild
        raise GuildNotFound()

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append((name, args, kwargs))
        if self.fail_with is not None:
            raise self.fail_with

    def login(self, token: str) -> BotLogin:
        if self.gate is not None:
            self.gate.wait(10)
        if self.login_fails_with is not None:
            raise self.login_fails_with
        if token not in self.tokens:
            raise InvalidToken()
        guilds = self.tokens[token]
        if not guilds:
            raise NoGuilds()
        bot = fingerprint(token)
        with self._lock:
            self.logins[bot] += 1
        return BotLogin(
            bot, tuple(GuildSummary(str(g.id), g.name, len(g.members), None) for g in guilds)
        )

    def release(self, bot: str) -> None:
        with self._lock:
            self.calls.append(("release", (bot,), {}))

    def check(self, bot: str) -> Failure | None:
        return self.failures.get(bot)

    def guilds(self, bot: str) -> tuple[GuildSummary, ...]:
        return tuple(
            GuildSummary(str(g.id), g.name, len(g.members), None) for g in self._guilds(bot)
        )

    def members(
        self, bot: str, guild_id: int, *, limit: int | None = None, after: int | None = None
    ) -> JsonDocument:
        self._record("members", guild_id, limit=limit, after=after)
        people = self._guild(bot, guild_id).members
        if after is not None:
            people = [m for m in people if int(m["id"]) > after]
        if limit is not None:
            people = people[:limit]
        body = json.dumps(people).encode()
        return JsonDocument(hashlib.sha256(body).hexdigest()[:16], body=body)

    def channels(self, bot: str, guild_id: int, *, kind: str = "text") -> list[dict[str, Any]]:
        self._record("channels", guild_id, kind=kind)
        return [
            c for c in self._guild(bot, guild_id).channels if kind == "all" or c["type"] == kind
        ]

    def messages(
        self,
        bot: str,
        guild_id: int,
        channel_id: int,
        *,
        limit: int = 100,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
    ) -> list[dict[str, Any]]:
        self._record(
            "messages", guild_id, channel_id, limit=limit, before=before, after=after, around=around
        )
        history = self._guild(bot, guild_id).messages.get(channel_id)
        if history is None:
            raise ChannelNotFound()
        if before is not None:
            history = [m for m in history if int(m["id"]) < before]
        return history[:limit]

    def _history(self, bot: str, guild_id: int, channel_id: int) -> list[dict[str, Any]]:
        history = self._guild(bot, guild_id).messages.get(channel_id)
        if history is None:
            raise ChannelNotFound()
        return history

    def send_message(
        self,
        bot: str,
        guild_id: int,
        channel_id: int,
        content: str,
        *,
        reply_to: int | None = None,
        allow_mentions: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        self._record(
            "send_message",
            guild_id,
            channel_id,
            content,
            reply_to=reply_to,
            allow_mentions=allow_mentions,
            idempotency_key=idempotency_key,
        )
        history = self._history(bot, guild_id, channel_id)
        with self._lock:
            if idempotency_key is not None and (channel_id, idempotency_key) in self._sent:
                return self._sent[(channel_id, idempotency_key)]
            newest = max((int(m["id"]) for m in history), default=0)
            message = {
                "id": str(newest + 1),
                "channelId": str(channel_id),
                "content": content,
                "author": {
                    "id": "42",
                    "username": "fakebot",
                    "name": "Fake Bot",
                    "avatar": DEFAULT_AVATAR,
                },
                "timestamp": 1_700_000_000_000,
                "editedTimestamp": None,
                "attachments": [],
                "embeds": 0,
                "replyTo": str(reply_to) if reply_to is not None else None,
            }
            history.insert(0, message)
            if idempotency_key is not None:
                self._sent[(channel_id, idempotency_key)] = message
        return message

    def _message(self, bot: str, guild_id: int, channel_id: int, message_id: int) -> dict[str, Any]:
        for message in self._history(bot, guild_id, channel_id):
            if int(message["id"]) == message_id:
                return message
        raise MessageNotFound()

    def edit_message(
        self,
        bot: str,
        guild_id: int,
        channel_id: int,
        message_id: int,
        content: str,
        *,
        allow_mentions: bool = False,
    ) -> dict[str, Any]:
        self._record(
            "edit_message", guild_id, channel_id, message_id, content, allow_mentions=allow_mentions
        )
        message = self._message(bot, guild_id, channel_id, message_id)
        message.update(content=content, editedTimestamp=1_700_000_000_001)
        return message

    def delete_message(self, bot: str, guild_id: int, channel_id: int, message_id: int) -> None:
        self._record("delete_message", guild_id, channel_id, message_id)
        history = self._history(bot, guild_id, channel_id)
        history.remove(self._message(bot, guild_id, channel_id, message_id))

    def released(self) -> list[str]:
        """Fingerprints of every release, in order."""
        return [args[0] for name, args, _ in self.calls if name == "release"]

    def refuse_new(self) -> None:
        self.refusing = True

    def close(self) -> None:
        self.closed = True
