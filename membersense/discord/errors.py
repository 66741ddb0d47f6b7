"""What can go wrong with Discord, as small exceptions that carry data.

The Discord layer raises only these. They know nothing of HTTP: the web layer
maps each class to a status in one table (:mod:`membersense.errors`). Every
message is written by us, never copied from discord.py, aiohttp or Discord,
whose texts can echo URLs, payloads or headers; so a message is always safe
to show a client.

A failure kept to answer several callers (a connection that ended for good, a
member load that was refused) is kept as a :class:`Failure`, plain data, and
each caller raises a new exception from it: one exception instance raised in
several threads would have its traceback rewritten by each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DiscordError",
    "Failure",
    "InvalidToken",
    "MissingIntents",
    "NoGuilds",
    "GuildNotFound",
    "ChannelNotFound",
    "MessageNotFound",
    "NotMessageable",
    "MissingAccess",
    "InvalidMessage",
    "RateLimited",
    "DailyLoginsUsed",
    "MembersLoading",
    "HeldBack",
    "Busy",
    "Reconnecting",
    "DiscordUnavailable",
    "DiscordTimeout",
    "BotReleased",
    "ServiceClosed",
]


class DiscordError(Exception):
    """Something about Discord stopped an operation.

    *message* is for the API client; *retry_after* (seconds), when set, says
    when trying again may work.
    """

    default_message = "Discord request failed"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, retry_after={self.retry_after!r})"

    def failure(self) -> Failure:
        """This error as data, to keep and raise again later."""
        return Failure(type(self), self.message, self.retry_after)


@dataclass(frozen=True)
class Failure:
    """A :class:`DiscordError` kept as data (see the module docstring)."""

    kind: type[DiscordError]
    message: str
    retry_after: float | None = None

    def error(self) -> DiscordError:
        """A new exception for this failure, ready to raise."""
        return self.kind(self.message, retry_after=self.retry_after)


# -- the token and the bot ----------------------------------------------------------


class InvalidToken(DiscordError):
    """Discord rejected the bot token (at login, or later: it was revoked)."""

    default_message = "Invalid Discord token"


class MissingIntents(DiscordError):
    """The bot lacks privileged intents MemberSense needs."""

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        intents: tuple[str, ...] = (),
    ) -> None:
        if message is None:
            listed = " and ".join(intents) or "privileged intents"
            message = (
                f"The bot needs the {listed} enabled: turn "
                f"{'them' if len(intents) > 1 else 'it'} on in the Discord Developer "
                "Portal (Bot > Privileged Gateway Intents), then log in again"
            )
        super().__init__(message, retry_after=retry_after)


class NoGuilds(DiscordError):
    """The bot is in no guild, so there is nothing to read."""

    default_message = "The bot is not in any server: invite it to a server first"


# -- what was asked for ----------------------------------------------------------------


class GuildNotFound(DiscordError):
    """No such guild, or the bot is not in it."""

    default_message = "Guild not found"


class ChannelNotFound(DiscordError):
    """No such channel in the guild (another guild's channels look the same)."""

    default_message = "Channel not found"


class MessageNotFound(DiscordError):
    """No such message in the channel."""

    default_message = "Message not found"


class NotMessageable(DiscordError):
    """The channel has no messages (a category, say)."""

    default_message = "This channel has no messages"


class MissingAccess(DiscordError):
    """The bot may not do this (read that channel, edit that message…)."""

    default_message = "The bot does not have access to this resource"


class InvalidMessage(DiscordError):
    """Discord refused a message body as invalid."""

    default_message = "Discord rejected the message"


# -- not now --------------------------------------------------------------------------------


class RateLimited(DiscordError):
    """Discord is rate limiting this bot; *retry_after* says for how long."""

    default_message = "Discord is rate limiting this bot; try again later"


class DailyLoginsUsed(DiscordError):
    """The bot has used up the gateway sessions Discord allows it per day."""

    default_message = "The bot has used up its daily gateway logins; try again later"


class MembersLoading(DiscordError):
    """The guild's member list is still loading (Discord's member-request cooldown)."""

    default_message = "The member list is still loading; try again shortly"


class HeldBack(DiscordError):
    """MemberSense holds calls to Discord back to stay out of its invalid-request ban."""

    default_message = "Discord refused too many requests from this server lately; try again later"


class Reconnecting(DiscordError):
    """Redis mode: the bot's connection is being taken over by another process."""

    default_message = "The bot is reconnecting to Discord; try again shortly"


class Busy(DiscordError):
    """Too many requests of this kind are already waiting on Discord."""

    default_message = "Too many requests are waiting on Discord; try again shortly"


# -- Discord itself -----------------------------------------------------------------------


class DiscordUnavailable(DiscordError):
    """Discord answered with a server error, could not be reached, or closed the gateway."""

    default_message = "Discord is unavailable"


class DiscordTimeout(DiscordError):
    """Discord did not answer within the time MemberSense gives it."""

    default_message = "Discord did not respond in time"


# -- MemberSense's own end of the connection ----------------------------------------


class BotReleased(DiscordError):
    """The bot's connection was closed because no session uses it any more.

    Seen by a request that raced the logout of the bot's last session: for
    that client the session is gone.
    """

    default_message = "Unauthorized"


class ServiceClosed(DiscordError):
    """MemberSense is shutting down and takes no more Discord work."""

    default_message = "Server is shutting down"
