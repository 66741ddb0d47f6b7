"""Where discord.py connects: Discord, or the sandbox (and where asset URLs point).

discord.py reads its REST base (``Route.BASE``) and gateway URL
(``DiscordWebSocket.DEFAULT_GATEWAY``) from class attributes, i.e. once per
process for every client. They are set here from ``DISCORD_API_BASE`` and
``DISCORD_GATEWAY_URL`` before a client is created. Changing them while any
client is alive would silently move that client, so it is refused.
"""

from __future__ import annotations

import threading

import yarl
from discord import VoiceClient
from discord.gateway import DiscordWebSocket
from discord.http import Route

from membersense.config import Settings
from membersense.discord import serializers

__all__ = ["EndpointConflict", "use_endpoints", "release_endpoints", "use_discovered_gateway"]

_lock = threading.Lock()
_current: tuple[str, str, str] | None = None
_users = 0
#: discord.py's own default, until Discord tells us its gateway (DISCORD_GATEWAY_URL unset).
_DEFAULT_GATEWAY = DiscordWebSocket.DEFAULT_GATEWAY


class EndpointConflict(RuntimeError):
    """Another Discord API base or gateway is in use by live clients of this process."""


def use_endpoints(settings: Settings) -> None:
    """Point discord.py at the configured Discord; pair with :func:`release_endpoints`.

    Call it before creating a client. Raises :class:`EndpointConflict` if live
    clients use different endpoints.
    """
    global _current, _users
    wanted = (settings.discord_api_base, settings.discord_gateway_url, settings.discord_cdn_base)
    with _lock:
        if _current != wanted:
            if _users:
                raise EndpointConflict(
                    "this process already talks to another Discord API base or gateway"
                )
            Route.BASE = settings.discord_api_base
            DiscordWebSocket.DEFAULT_GATEWAY = (
                yarl.URL(settings.discord_gateway_url) if settings.discord_gateway_url
                else _DEFAULT_GATEWAY
            )
            serializers.use_cdn_base(settings.discord_cdn_base)
            _current = wanted
            # MemberSense never joins voice: discord.py's warnings about missing voice
            # libraries at the first client would only alarm operators.
            VoiceClient.warn_nacl = False
            VoiceClient.warn_dave = False
        _users += 1


def use_discovered_gateway(url: str) -> None:
    """Connect to *url*, the gateway ``GET /gateway/bot`` named, if none is configured.

    With ``DISCORD_GATEWAY_URL`` unset, the gateway is whatever the configured
    API says it is, so pointing ``DISCORD_API_BASE`` at another Discord (the
    sandbox) is enough. A configured URL always wins.
    """
    with _lock:
        if _current is not None and not _current[1] and url:
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)


def release_endpoints() -> None:
    """A client that called :func:`use_endpoints` is gone."""
    global _users
    with _lock:
        _users = max(0, _users - 1)
