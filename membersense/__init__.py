"""MemberSense: a self-hosted REST gateway to a Discord bot's guild data.

``create_app()`` builds the Flask application; ``wsgi.py`` exposes it to
gunicorn and other WSGI servers. Importing this package starts nothing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from membersense import access, bulkhead, extensions, processes, response_policy
from membersense.api import register_blueprints
from membersense.config import Settings, load_settings
from membersense.errors import register_error_handlers
from membersense.json_provider import OrjsonProvider
from membersense.runtime import Runtime, runtime_of

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from werkzeug.datastructures import Headers

    from membersense.discord.service import DiscordService

__all__ = ["create_app", "runtime_of"]

#: Headers a browser client may send, and may read back.
CORS_REQUEST_HEADERS = [
    "Content-Type",
    "Authorization",
    "X-Request-ID",
    "If-None-Match",
    "Idempotency-Key",
    "Last-Event-ID",
]
CORS_EXPOSED_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "ETag",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "X-Event-Cursor",
]


def create_app(
    test_config: Mapping[str, Any] | None = None,
    *,
    discord: DiscordService | None = None,
    clock: Callable[[], float] | None = None,
) -> Flask:
    """Build the MemberSense app.

    Without *test_config*, settings come from the environment (and ``.env``).
    With it, settings are the defaults overlaid by its keys (environment
    variable names, e.g. ``{"RATE_LIMIT_MAX_REQUESTS": 3}``), so tests do not
    depend on the shell they run in. *discord* replaces the discord.py
    service (HTTP-layer tests pass a fake); *clock* is the session store's
    monotonic clock.

    Logging is the entry point's business (``wsgi.py``, ``membersense
    serve``, gunicorn's config): see :func:`membersense.logs.configure_logging`.
    The app's :class:`~membersense.runtime.Runtime` (``runtime_of(app)``)
    owns every thread and connection the app starts; its ``close()`` stops them.
    """
    overrides = dict(test_config or {})
    if test_config is None:
        settings = load_settings()
    else:
        settings = load_settings(environ={}, overrides=overrides)
    if not settings.redis_mode:
        processes.check_host()

    app = _MemberSenseFlask(__name__, static_folder=None)
    app.config.update(
        SETTINGS=settings,
        TESTING=bool(overrides.get("TESTING", test_config is not None)),
        MAX_CONTENT_LENGTH=settings.max_content_length,
    )
    if settings.trusted_proxies:
        # Only the last N X-Forwarded-For entries were written by our proxies;
        # anything before them is whatever the client sent.
        n = settings.trusted_proxies
        # Flask's documented way to add WSGI middleware, which mypy takes for a method rebind.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]

    access.init_app(app)  # first: every later hook and error sees a request id
    response_policy.init_app(app)
    if not settings.redis_mode:
        processes.init_app(app)
    _init_cors(app, settings)
    extensions.init_app(app, Runtime(settings, discord=discord, clock=clock))
    bulkhead.init_app(app, settings)
    register_error_handlers(app)
    register_blueprints(app)
    return app


class _MemberSenseResponse(Response):
    """Flask's response, handing its own headers to the server when they need no fixing.

    werkzeug copies every header of every response (:meth:`get_wsgi_headers`)
    to adjust a few: ``Location`` and ``Content-Location`` made URIs, no length
    on 1xx, 204 and 304 answers, a length worked out for bodies held whole.
    Most answers need none of that, and the copy was about a twelfth of a
    cached members request; those answers keep their headers as they are.
    """

    def get_wsgi_headers(self, environ: WSGIEnvironment) -> Headers:
        """The headers to send (see :meth:`werkzeug.wrappers.Response.get_wsgi_headers`)."""
        status = self.status_code
        if status < 200 or status in (204, 304):
            return super().get_wsgi_headers(environ)
        has_length = False
        for name, _ in self.headers:
            lowered = name.lower()
            if lowered in ("location", "content-location"):
                return super().get_wsgi_headers(environ)
            has_length = has_length or lowered == "content-length"
        if not has_length and self.is_sequence:
            return super().get_wsgi_headers(environ)
        return self.headers


class _MemberSenseFlask(Flask):
    """Flask with orjson for its JSON answers, deciding once per function whether a view
    or hook is a coroutine function.

    Flask asks it of every view and hook on every request (``ensure_sync``),
    about a tenth of a cached request's time here, and the answer never changes.
    Keyed by the function under a bound method, so the cache is as small as the code.
    """

    json_provider_class = OrjsonProvider
    response_class = _MemberSenseResponse

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """*func* as Flask would run it (see :meth:`flask.Flask.ensure_sync`)."""
        cache: dict[Callable[..., Any], bool] = self.__dict__.setdefault("_async_cache", {})
        code = getattr(func, "__func__", func)
        try:
            is_async = cache[code]
        except KeyError:
            is_async = cache[code] = inspect.iscoroutinefunction(func)
        except TypeError:  # unhashable: decide each time, as Flask does
            return super().ensure_sync(func)
        return self.async_to_sync(func) if is_async else func


def _only_with_origin(app: Flask) -> None:
    # flask-cors's hook matches the path against its resources and resolves its options
    # on every response before it looks at Origin: about a seventh of a health check's
    # time in the app, for requests it then leaves alone (always_send=False).
    hooks = app.after_request_funcs.setdefault(None, [])
    for index, hook in enumerate(hooks):
        if getattr(hook, "__module__", "").startswith("flask_cors"):
            hooks[index] = _when_origin(hook)


def _when_origin(hook: Callable[[Any], Any]) -> Callable[[Response], Any]:
    @functools.wraps(hook)
    def cors_after_request(response: Response) -> Any:
        return hook(response) if "HTTP_ORIGIN" in request.environ else response

    return cors_after_request


def _init_cors(app: Flask, settings: Settings) -> None:
    # With a list, flask-cors answers with the request's own Origin when it is
    # allowed and grants nothing otherwise (one origin per header, as browsers
    # require).
    wildcard = settings.allowed_origins == ("*",)
    CORS(
        app,
        origins="*" if wildcard else list(settings.allowed_origins),
        send_wildcard=wildcard,
        # Only browsers read CORS headers, and they send Origin on every cross-origin
        # request: a request without one (health checks, server-side clients) gets none.
        always_send=False,
        methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        max_age=600,
    )
    _only_with_origin(app)
    if not wildcard:
        # The answer depends on the request's Origin; flask-cors says so only when
        # several origins are configured, and a shared cache must always know.
        @app.after_request
        def _vary_on_origin(response: Response) -> Response:
            response.vary.add("Origin")
            return response
