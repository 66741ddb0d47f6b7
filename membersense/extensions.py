"""The process's module-level services, wired into an app by :func:`init_app`.

- :data:`sessions`: each app's lock-protected session registry.
- :data:`rate_limiting`: each app's per-IP sliding-window budget (`limits`).
- :data:`discord`: each app's Discord connector (the discord.py bridge in
  production, a test double in HTTP-layer tests).

Nothing here starts a thread, loop or socket when imported or initialised:
the bridge's loop and the session sweeper start with the first login, in the
serving process.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any

from flask import Flask, current_app

from membersense.config import Settings
from membersense.discord.service import DiscordConnector
from membersense.ratelimit import RateLimiting
from membersense.sessions import Sessions

__all__ = ["sessions", "rate_limiting", "discord", "init_app", "refuse_new_sessions", "shutdown"]

log = logging.getLogger("membersense")


class Discord:
    """The Flask extension holding each app's :class:`DiscordConnector`."""

    key = "membersense.discord"

    def init_app(self, app: Flask, settings: Settings, connector: DiscordConnector | None) -> None:
        """Use *connector*, or build the discord.py bridge connector from *settings*."""
        if connector is None:
            from membersense.discord.connector import BridgeConnector

            connector = BridgeConnector(settings)
        app.extensions[self.key] = connector

    @property
    def connector(self) -> DiscordConnector:
        """The current app's connector."""
        return current_app.extensions[self.key]


sessions = Sessions()
rate_limiting = RateLimiting()
discord = Discord()

# Apps whose services must be closed at exit; weak so tests' apps can be collected.
_apps: weakref.WeakSet[Flask] = weakref.WeakSet()
_shutdown_lock = threading.Lock()


def init_app(app: Flask, settings: Settings, test_config: dict[str, Any]) -> None:
    """Wire every service into *app*. Order matters only for request hooks."""
    sessions.init_app(app, settings, clock=test_config.get("CLOCK"))
    rate_limiting.init_app(app, settings)
    discord.init_app(app, settings, test_config.get("DISCORD_CONNECTOR"))
    _apps.add(app)


def refuse_new_sessions() -> None:
    """Stop taking logins (503) in every app, ahead of :func:`shutdown`."""
    for each in list(_apps):
        registry = each.extensions.get(Sessions.key)
        if registry is not None:
            registry.refuse_new()


def shutdown(app: Flask | None = None) -> None:
    """Close sessions and Discord connections of *app* (default: every app).

    Runs after SIGTERM and from gunicorn's ``worker_exit`` hook (see
    :mod:`membersense.serving`) and at interpreter exit; safe to call more
    than once.
    """
    with _shutdown_lock:
        apps = [app] if app is not None else list(_apps)
        for each in apps:
            registry = each.extensions.get(Sessions.key)
            if registry is not None:
                closed = registry.close_all()
                if closed:
                    log.info("closed sessions at shutdown", extra={"fields": {"count": closed}})
            connector = each.extensions.get(Discord.key)
            if connector is not None:
                connector.close()


atexit.register(shutdown)
