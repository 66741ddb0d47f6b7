"""What the rest of MemberSense needs from Discord: one protocol and its values.

The web layer and the session manager only ever talk to a
:class:`DiscordService`. Bots are named by token fingerprint: a session holds
no connection, only the fingerprint of its bot. The implementation that runs
discord.py on the bridge's loop is :class:`membersense.discord.local.LocalDiscord`;
HTTP-layer tests pass a fake to ``create_app(discord=...)``.

Every method blocks the calling (request) thread, is safe to call from any
thread but the bridge's loop thread, and fails only with
:class:`membersense.discord.errors.DiscordError` subclasses.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from membersense.discord.errors import Failure

__all__ = ["BotLogin", "ChannelKind", "DiscordService", "GuildSummary", "JsonDocument"]

ChannelKind = Literal["text", "voice", "category", "all"]

#: How much of a gzip copy is inflated at a time (about five times that comes out).
_INFLATE_INPUT = 64 * 1024


@dataclass(frozen=True, slots=True)
class GuildSummary:
    """One guild the bot is in, as the login answer (and ``guild.update``) describes it."""

    id: str
    name: str
    member_count: int
    icon_url: str | None

    def to_json(self) -> dict[str, Any]:
        """The summary as the API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "memberCount": self.member_count,
            "iconURL": self.icon_url,
        }


@dataclass(frozen=True, slots=True)
class JsonDocument:
    """A JSON body serialized once and served many times, with its entity tag.

    At least one of *body* (plain) and *gzip* (the same body gzip-compressed)
    is set. Large member lists keep only the compressed copy; :meth:`chunks`
    gives the plain body either way.
    """

    etag: str
    body: bytes | None = None
    gzip: bytes | None = None

    def chunks(self) -> Iterator[bytes]:
        """The plain body, in pieces (inflated from the gzip copy when only that is kept)."""
        if self.body is not None:
            yield self.body
            return
        assert self.gzip is not None
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = memoryview(self.gzip)
        for start in range(0, len(data), _INFLATE_INPUT):
            piece = inflater.decompress(data[start : start + _INFLATE_INPUT])
            if piece:
                yield piece
        rest = inflater.flush()
        if rest:
            yield rest

    def plain(self) -> bytes:
        """The whole plain body."""
        return self.body if self.body is not None else b"".join(self.chunks())


@dataclass(frozen=True, slots=True)
class BotLogin:
    """A successful login: the bot, and its guilds (the default one first)."""

    fingerprint: str
    guilds: tuple[GuildSummary, ...]


class DiscordService(Protocol):
    """Logged-in bots, reads of their guilds, and the messages they send (see the module
    docstring)."""

    def login(self, token: str) -> BotLogin:
        """Connect the bot (or join its live connection) for one more session.

        Returns once its guilds are known and, unless Discord's member-request
        cooldown applies, its member lists are loaded. On failure nothing is
        left running for this login.
        """
        ...

    def release(self, fingerprint: str) -> None:
        """A session of this bot ended; the bot disconnects once it has none (after a linger)."""
        ...

    def check(self, fingerprint: str) -> Failure | None:
        """Why sessions of this bot can no longer be served (revoked token…), or None."""
        ...

    def guilds(self, fingerprint: str) -> tuple[GuildSummary, ...]:
        """The bot's guilds now."""
        ...

    def members(
        self, fingerprint: str, guild_id: int, *, limit: int | None = None, after: int | None = None
    ) -> JsonDocument:
        """Members of the guild ordered by user id; with *limit*, at most that many above *after*."""
        ...

    def channels(
        self, fingerprint: str, guild_id: int, *, kind: ChannelKind = "text"
    ) -> list[dict[str, Any]]:
        """The guild's channels of *kind*, in Discord's display order."""
        ...

    def messages(
        self,
        fingerprint: str,
        guild_id: int,
        channel_id: int,
        *,
        limit: int = 100,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
    ) -> list[dict[str, Any]]:
        """Up to *limit* messages of a channel of the guild, newest first."""
        ...

    def send_message(
        self,
        fingerprint: str,
        guild_id: int,
        channel_id: int,
        content: str,
        *,
        reply_to: int | None = None,
        allow_mentions: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Post a message as the bot in a channel of the guild; it as ``messages`` shows it.

        Mentions ping no one unless *allow_mentions*; *reply_to* is a message of
        the channel. A repeat of the same *idempotency_key* in the channel within
        a few minutes returns the message already made instead of posting again.
        """
        ...

    def edit_message(
        self,
        fingerprint: str,
        guild_id: int,
        channel_id: int,
        message_id: int,
        content: str,
        *,
        allow_mentions: bool = False,
    ) -> dict[str, Any]:
        """Replace the content of one of the bot's messages; the edited message."""
        ...

    def delete_message(
        self, fingerprint: str, guild_id: int, channel_id: int, message_id: int
    ) -> None:
        """Delete a message of the channel (the bot's own, or any with Manage Messages)."""
        ...

    def refuse_new(self) -> None:
        """Shutting down: take on no bot from now on (logins are refused already; the
        connections already made keep serving until :meth:`close`)."""
        ...

    def close(self) -> None:
        """Disconnect every bot and stop background work. Idempotent."""
        ...
