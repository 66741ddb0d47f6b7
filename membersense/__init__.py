"""MemberSense: a self-hosted REST gateway to a Discord bot's guild data.

``create_app()`` builds the Flask application; ``wsgi.py`` exposes it to
gunicorn. Importing this package starts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from membersense import access, bulkhead, extensions, response_policy
from membersense.api import register_blueprints
from membersense.config import Settings, load_settings
from membersense.errors import register_error_handlers
from membersense.logs import configure_logging

__all__ = ["create_app"]

#: Headers a browser client may send, and may read back.
CORS_REQUEST_HEADERS = ["Content-Type", "Authorization", "X-Request-ID", "If-None-Match"]
CORS_EXPOSED_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "ETag",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the MemberSense app.

    Without *test_config*, settings come from the environment (and ``.env``).
    With it, settings are the defaults overlaid by its keys (environment
    variable names, e.g. ``{"RATE_LIMIT_MAX_REQUESTS": 3}``), so tests do not
    depend on the shell they run in. Besides settings it may carry
    ``DISCORD_CONNECTOR`` (a :class:`~membersense.discord.service.DiscordConnector`
    to use instead of the discord.py bridge), ``CLOCK`` (the session
    registry's monotonic clock) and ``LOG_STREAM`` (where logs go).
    """
    overrides = dict(test_config or {})
    if test_config is None:
        settings = load_settings()
    else:
        settings = load_settings(environ={}, overrides=overrides)

    app = Flask(__name__, static_folder=None)
    app.config.update(
        SETTINGS=settings,
        TESTING=bool(overrides.get("TESTING", test_config is not None)),
        MAX_CONTENT_LENGTH=settings.max_content_length,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.trusted_proxies:
        # Only the last N X-Forwarded-For entries were written by our proxies;
        # anything before them is whatever the client sent.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]

    configure_logging(settings, overrides.get("LOG_STREAM"))
    access.init_app(app)  # first: every later hook and error sees a request id
    response_policy.init_app(app)
    _init_cors(app, settings)
    extensions.init_app(app, settings, overrides)
    bulkhead.init_app(app, settings)
    register_error_handlers(app)
    register_blueprints(app)
    return app


def _init_cors(app: Flask, settings: Settings) -> None:
    # With a list, flask-cors answers with the request's own Origin when it is
    # allowed and grants nothing otherwise (one origin per header, as browsers
    # require).
    wildcard = settings.allowed_origins == ("*",)
    CORS(
        app,
        origins="*" if wildcard else list(settings.allowed_origins),
        send_wildcard=wildcard,
        methods=["GET", "POST", "OPTIONS"],
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        max_age=600,
    )
    if not wildcard:
        # The answer depends on the request's Origin; flask-cors says so only when
        # several origins are configured, and a shared cache must always know.
        @app.after_request
        def _vary_on_origin(response: Response) -> Response:
            response.vary.add("Origin")
            return response
