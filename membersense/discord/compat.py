"""Every use of discord.py's internals, in one place.

MemberSense needs a few things discord.py has no public API for. Each is
here, with why, and ``tests/test_discord_compat.py`` fails if one disappears
or changes shape in a new discord.py release (setup.cfg also bounds
discord.py below 3). Nothing else in MemberSense touches a private name of
discord.py.

- Where it connects: ``Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY``
  are class attributes read for every client of the process.
- The raw gateway payloads of members and messages. MemberSense keeps its own
  compact member lists (discord.py's member cache costs about 1 KB and 100 µs
  a member: a 100 000-member guild would take 100 MB and seconds to load) and
  builds its events from Discord's own JSON. A subclass of discord.py's
  ``ConnectionState`` overrides the ``parse_*`` methods its constructor
  collects as gateway parsers; the client builds it through ``_get_state``.
- Discord's ``RATE_LIMITED`` dispatch (the answer to a member request within
  Discord's cooldown), which discord.py does not parse.
- Sending a member request (op 8) ourselves: ``Client.ws.request_chunks``.
- ``ConnectionState._ready_task``, which ``Client.close()`` leaves running.
- ``HTTPClient`` (``client.http``): the REST calls discord.py's public models
  would need cached objects for, and its rate-limit ceiling; in Redis mode, an
  ``HTTPClient`` of its own (no gateway) for a bot another process connects.
- ``HTTPClient.request`` with a ``Route``: sending and editing messages with
  the JSON body MemberSense builds (:mod:`membersense.discord.outgoing`).
  discord.py's own ``send_message`` takes parameters built from its model
  objects, which would add fields of its own (``tts``) and turn our mention
  and reply settings into its classes and back; ``request`` sends the body as
  built, the one checked against Discord's schema in the tests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol, cast

import discord
import yarl
from discord import VoiceClient
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route
from discord.state import ConnectionState

__all__ = [
    "EndpointConflict",
    "rest_client",
    "GatewayListener",
    "bot_gateway",
    "cancel_ready_task",
    "delete_message",
    "edit_message",
    "make_client",
    "message_history",
    "release_endpoints",
    "request_all_members",
    "send_message",
    "set_rate_limit_ceiling",
    "use_discovered_gateway",
    "use_endpoints",
]

log = logging.getLogger("membersense.discord")

# -- where discord.py connects ---------------------------------------------------------

_endpoint_lock = threading.Lock()
_endpoints: tuple[str, str] | None = None
_endpoint_users = 0
#: discord.py's own default, until Discord tells us its gateway (DISCORD_GATEWAY_URL unset).
_DEFAULT_GATEWAY = DiscordWebSocket.DEFAULT_GATEWAY


class EndpointConflict(RuntimeError):
    """Another Discord API base or gateway is in use by live clients of this process."""


def use_endpoints(api_base: str, gateway_url: str) -> None:
    """Point discord.py at this Discord (*gateway_url* "" to discover it); pair with
    :func:`release_endpoints`.

    discord.py reads both from class attributes, i.e. once for every client of
    the process; changing them while a client is alive would silently move
    it, so that raises :class:`EndpointConflict`.
    """
    global _endpoints, _endpoint_users
    wanted = (api_base, gateway_url)
    with _endpoint_lock:
        if _endpoints != wanted:
            if _endpoint_users:
                raise EndpointConflict(
                    "this process already talks to another Discord API base or gateway"
                )
            Route.BASE = api_base
            DiscordWebSocket.DEFAULT_GATEWAY = (
                yarl.URL(gateway_url) if gateway_url else _DEFAULT_GATEWAY
            )
            _endpoints = wanted
            # MemberSense never joins voice: discord.py's warnings about missing voice
            # libraries at the first client would only alarm operators.
            VoiceClient.warn_nacl = False
            VoiceClient.warn_dave = False
        _endpoint_users += 1


def use_discovered_gateway(url: str) -> None:
    """Connect to *url*, the gateway ``GET /gateway/bot`` named, unless one is configured."""
    with _endpoint_lock:
        if _endpoints is not None and not _endpoints[1] and url:
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)


def release_endpoints() -> None:
    """A client that called :func:`use_endpoints` is gone."""
    global _endpoint_users
    with _endpoint_lock:
        _endpoint_users = max(0, _endpoint_users - 1)


def endpoint_users() -> int:
    """Clients of this process holding the endpoints (for tests)."""
    with _endpoint_lock:
        return _endpoint_users


# -- the gateway, raw -------------------------------------------------------------------


class GatewayListener(Protocol):
    """What a client made by :func:`make_client` reports, on the event loop."""

    def on_gateway(self, event: str, data: Any) -> None:
        """A gateway dispatch of :data:`RAW_EVENTS`, with Discord's own payload."""

    def on_dispatch(self, event: str, args: tuple[Any, ...]) -> None:
        """Every event discord.py dispatches (``guild_remove``, ``guild_channel_create``…)."""


#: Dispatches whose payloads MemberSense reads. True: discord.py parses them
#: first (MemberSense then reads the guild, its channels and roles from
#: discord.py's cache); False: MemberSense alone handles them (discord.py would
#: only build member and message objects nobody reads).
RAW_EVENTS: Mapping[str, bool] = {
    "READY": True,
    "GUILD_CREATE": True,
    "GUILD_MEMBER_ADD": True,
    "GUILD_MEMBER_UPDATE": True,
    "GUILD_MEMBER_REMOVE": True,
    "GUILD_MEMBERS_CHUNK": False,
    "MESSAGE_CREATE": False,
    "MESSAGE_UPDATE": False,
    "MESSAGE_DELETE": False,
    "MESSAGE_DELETE_BULK": False,
    "RATE_LIMITED": False,
}


class _State(ConnectionState):
    """discord.py's connection state, telling a :class:`GatewayListener` what it reads."""

    def __init__(self, *args: Any, listener: GatewayListener, **kwargs: Any) -> None:
        self._membersense = listener
        super().__init__(*args, **kwargs)
        # The parsers table is built by the constructor from parse_* methods (ours
        # included); wrap the ones we read in order to tell the listener.
        for event, discord_parses in RAW_EVENTS.items():
            original = self.parsers.get(event) if discord_parses else None
            self.parsers[event] = self._reporting(event, original)

    def _reporting(self, event: str, original: Any) -> Any:
        listener = self._membersense

        def parse(data: Any) -> None:
            if original is not None:
                original(data)
            try:
                listener.on_gateway(event, data)
            except Exception as exc:
                # A bug of ours must not end discord.py's gateway loop (it reconnects
                # on any exception out of a parser).
                log.error("handling %s failed: %s", event, type(exc).__name__)

        return parse


class _Client(discord.Client):
    """A ``discord.Client`` whose state and dispatches report to a listener."""

    def __init__(self, listener: GatewayListener, **options: Any) -> None:
        self._membersense = listener
        super().__init__(**options)

    # discord.py types _get_state's options by keyword; we pass them all through.
    def _get_state(self, **options: Any) -> ConnectionState:  # type: ignore[override]
        # (discord.py types the state by the client's own class; this one is ours.)
        return _State(
            dispatch=self.dispatch,
            handlers=self._handlers,
            hooks=self._hooks,
            http=self.http,
            listener=self._membersense,
            **options,
        )

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        super().dispatch(event, *args, **kwargs)
        try:
            self._membersense.on_dispatch(event, args)
        except Exception as exc:
            log.error("handling %s failed: %s", event, type(exc).__name__)


def make_client(
    listener: GatewayListener, *, intents: discord.Intents, **options: Any
) -> discord.Client:
    """A client that keeps no members and no messages, and reports to *listener*.

    discord.py still caches guilds, roles and channels (and the bot's own
    member, for permissions); members and messages are MemberSense's.
    """
    return _Client(
        listener,
        intents=intents,
        member_cache_flags=discord.MemberCacheFlags.none(),
        chunk_guilds_at_startup=False,
        max_messages=None,
        **options,
    )


async def request_all_members(client: discord.Client, guild_id: int, nonce: str) -> None:
    """Send op 8 for the guild's whole member list (answered by GUILD_MEMBERS_CHUNKs).

    Raises ``ConnectionError`` when the gateway is not connected right now.
    """
    ws = client.ws
    if ws is None or not ws.open:
        raise ConnectionError("the gateway is not connected")
    await ws.request_chunks(guild_id, query="", limit=0, nonce=nonce)


def cancel_ready_task(client: discord.Client) -> Any:
    """Cancel the task that holds ``on_ready`` back (``Client.close()`` leaves it); return it."""
    task = getattr(client._connection, "_ready_task", None)
    if task is not None:
        task.cancel()
    return task


# -- REST -------------------------------------------------------------------------------


def set_rate_limit_ceiling(client: discord.Client, seconds: float) -> None:
    """Raise ``RateLimited`` instead of sleeping on a rate limit longer than *seconds*.

    discord.py never sleeps less than 30 s before raising; a request may only
    take ``DISCORD_TIMEOUT``.
    """
    client.http.max_ratelimit_timeout = seconds


async def bot_gateway(http: HTTPClient) -> tuple[str, dict[str, Any]]:
    """``GET /gateway/bot``: the gateway URL and the session start budget."""
    _, url, budget = await http.get_bot_gateway()
    return url, dict(budget or {})


async def message_history(
    http: HTTPClient,
    channel_id: int,
    limit: int,
    *,
    before: int | None,
    after: int | None,
    around: int | None,
) -> list[dict[str, Any]]:
    """``GET /channels/{id}/messages``: Discord's own message JSON."""
    messages = await http.logs_from(channel_id, limit, before=before, after=after, around=around)
    return cast(list[dict[str, Any]], messages)  # discord.py's TypedDicts of the same JSON


async def rest_client(token: str, *, http_trace: Any, ceiling: float) -> HTTPClient:
    """A REST-only discord.py client for *token*, logged in (``GET /users/@me``).

    Redis mode reads message history for bots whose gateway connection another
    process holds; close it with ``await client.close()``.
    """
    client = HTTPClient(asyncio.get_running_loop(), http_trace=http_trace)
    client.max_ratelimit_timeout = ceiling
    try:
        await client.static_login(token)
    except BaseException:
        await client.close()
        raise
    return client


async def send_message(
    http: HTTPClient, channel_id: int, body: Mapping[str, Any]
) -> dict[str, Any]:
    """``POST /channels/{id}/messages`` with *body* as given: Discord's JSON of the message."""
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id)
    return cast(dict[str, Any], await http.request(route, json=dict(body)))


async def edit_message(
    http: HTTPClient, channel_id: int, message_id: int, body: Mapping[str, Any]
) -> dict[str, Any]:
    """``PATCH /channels/{id}/messages/{id}`` with *body* as given: the edited message's JSON."""
    route = Route(
        "PATCH",
        "/channels/{channel_id}/messages/{message_id}",
        channel_id=channel_id,
        message_id=message_id,
    )
    return cast(dict[str, Any], await http.request(route, json=dict(body)))


async def delete_message(http: HTTPClient, channel_id: int, message_id: int) -> None:
    """``DELETE /channels/{id}/messages/{id}`` (discord.py picks Discord's sub-limits by age)."""
    await http.delete_message(channel_id, message_id)
