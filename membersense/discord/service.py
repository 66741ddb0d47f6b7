"""What the HTTP layer needs from Discord, as two small protocols.

The blueprints only ever talk to a :class:`DiscordConnector` (log a token in)
and the :class:`DiscordService` it returns (read one bot's guild data). The
real implementation runs discord.py on the bridge's event loop
(:mod:`membersense.discord.connector`); tests of the HTTP layer may pass a
fake through ``create_app({"DISCORD_CONNECTOR": ...})``.

Every method blocks the calling (request) thread, is safe to call from any
thread but the bridge's loop thread, and fails only with
:class:`membersense.errors.ApiError` subclasses: 401 for a rejected token,
403/404 for what the bot cannot see, 502/503/504 for Discord trouble.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["ChannelKind", "DiscordConnector", "DiscordService", "GuildSummary", "JsonDocument"]

ChannelKind = Literal["text", "voice", "category", "all"]


@dataclass(frozen=True)
class GuildSummary:
    """One guild the bot is in, as the login answer describes it."""

    id: str
    name: str
    member_count: int
    icon_url: str | None


@dataclass(frozen=True)
class JsonDocument:
    """A JSON body serialized once and served many times, with its entity tag.

    *gzip*, when present, is the same body gzip-compressed once, for clients
    that accept it (a 10 000-member list shrinks about five times).
    """

    body: bytes
    etag: str
    gzip: bytes | None = None


class DiscordService(Protocol):
    """One logged-in bot, as seen by one MemberSense session."""

    def guilds(self) -> list[GuildSummary]:
        """The bot's guilds, the default (login) guild first."""
        ...

    def members(
        self, guild_id: int | None, *, limit: int | None = None, after: int | None = None
    ) -> JsonDocument:
        """Members of *guild_id* (None: the default guild), ordered by user id.

        Without *limit* the whole list; with it, at most *limit* members whose
        id is greater than *after*.
        """
        ...

    def channels(self, guild_id: int | None, *, kind: ChannelKind = "text") -> list[dict[str, Any]]:
        """Channels of *guild_id* of the given kind, in Discord's display order."""
        ...

    def messages(
        self,
        guild_id: int | None,
        channel_id: int,
        *,
        limit: int = 100,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
    ) -> list[dict[str, Any]]:
        """Up to *limit* messages of a channel of *guild_id*, newest first."""
        ...

    @property
    def failed(self) -> bool:
        """True once the bot's connection has ended for good (token revoked, gateway
        closed with a final code): the session can never serve again and should end."""
        ...

    def close(self) -> None:
        """Release this session's hold on the bot's connection. Idempotent."""
        ...


class DiscordConnector(Protocol):
    """Turns a bot token into a :class:`DiscordService`."""

    def connect(self, token: str) -> DiscordService:
        """Log *token* in and return a service ready to answer reads.

        Raises :class:`membersense.errors.Unauthorized` for a token Discord
        rejects and other :class:`~membersense.errors.ApiError` subclasses for
        everything else that goes wrong; on failure nothing is left running.
        """
        ...

    def close(self) -> None:
        """Close every connection and stop background work. Idempotent."""
        ...
