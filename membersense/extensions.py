"""The process's module-level services, wired into an app by :func:`init_app`.

- :data:`sessions`: the request's session (``Authorization``), logins and
  logouts, through the app's :class:`~membersense.sessions.SessionManager`.
- :data:`rate_limiting`: each app's per-IP sliding-window budget (`limits`).
- :data:`bots`: each app's :class:`~membersense.discord.service.DiscordService`.

Their state lives in ``app.extensions`` (the app's
:class:`~membersense.runtime.Runtime`); nothing here starts a thread, loop or
socket when imported or initialised.
"""

from __future__ import annotations

from flask import Flask, current_app, g, request

from membersense.discord.service import DiscordService
from membersense.errors import Unauthorized
from membersense.ratelimit import RateLimiting
from membersense.runtime import Runtime, runtime_of
from membersense.runtime import init_app as init_runtime
from membersense.sessions import SessionManager, SessionRecord
from membersense.sessions.store import valid_session_id

__all__ = ["bots", "init_app", "rate_limiting", "sessions"]


def _session_id_from_header(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    return value if valid_session_id(value) else None


class Sessions:
    """The sessions of the current app, as request handlers need them."""

    @property
    def manager(self) -> SessionManager:
        """The current app's session manager."""
        return runtime_of(current_app).sessions

    def authenticate(self) -> SessionRecord:
        """The session named by this request's ``Authorization`` header, or 401.

        Accepts the bare id (what the MemberSense web client sends) and
        ``Bearer <id>``.
        """
        session_id = _session_id_from_header(request.environ.get("HTTP_AUTHORIZATION"))
        record = self.manager.authenticate(session_id) if session_id else None
        if record is None:
            raise Unauthorized()
        g.session = record
        return record


class Bots:
    """The current app's Discord service."""

    @property
    def service(self) -> DiscordService:
        """The service reads and logins go through."""
        return runtime_of(current_app).discord


sessions = Sessions()
rate_limiting = RateLimiting()
bots = Bots()


def init_app(app: Flask, runtime: Runtime) -> None:
    """Wire every service into *app*."""
    init_runtime(app, runtime)
    rate_limiting.init_app(app, runtime)
