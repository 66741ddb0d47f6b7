"""The WSGI servers besides gunicorn: what MemberSense needs from uWSGI and mod_wsgi.

gunicorn's specifics live in :mod:`membersense.serving`; the others' are here,
for ``wsgi.py`` (configurations in ``deploy/``):

- **What the server is and says.** uWSGI and Apache's mod_wsgi each put a
  module of their own in the interpreter (``uwsgi``, ``mod_wsgi``) that tells
  how many processes serve the app (:func:`process_count`, which
  :func:`membersense.processes.check_host` refuses above one in memory mode)
  and, for uWSGI, whether Python threads run at all: before 2.0.27 they do not
  unless ``enable-threads`` is set, and the Discord bridge is a thread, so
  :func:`check_threads` refuses to start without them.
- **Refusing clearly.** :func:`wsgi_app` turns such a refusal, or a bad
  setting, into one line in the server's log rather than a traceback. uWSGI
  then exits (``need-app``). Apache keeps a mod_wsgi daemon running and would
  retry the import, traceback and all, at every request, so there the app is
  replaced by one that answers every request 503 with the reason.
- **Closing on the server's stop.** The runtime's
  :meth:`~membersense.runtime.Runtime.close` ends every session and Discord
  connection. Python's ``atexit`` runs it where the interpreter is finalised.
  uWSGI's worker calls ``uwsgi.atexit`` first (its Python ``atexit`` hooks
  may not all get to run), but only when it has no request in flight: stopped
  mid-request it ends without any hook, and the Discord connections drop
  instead of closing (Discord ends such sessions on its own). A mod_wsgi
  daemon announces its shutdown before it waits for requests in flight, so
  there new logins are refused at once and the runtime closes after
  :data:`IN_FLIGHT_GRACE_S`, ending whatever still waits on Discord with a
  503, as under gunicorn.
"""

from __future__ import annotations

import atexit
import json
import sys
from collections.abc import Callable, Iterable
from types import ModuleType, TracebackType
from typing import Any

from flask import Flask

from membersense.config import ConfigError
from membersense.logs import configure_logging
from membersense.runtime import IN_FLIGHT_GRACE_S, Runtime, runtime_of

__all__ = [
    "NOT_STARTED",
    "StartupRefused",
    "ThreadsDisabled",
    "check_threads",
    "close_on_shutdown",
    "process_count",
    "server_module",
    "wsgi_app",
]


#: What a client gets from a mod_wsgi daemon that could not start for a bad setting (the
#: setting's value is for the operator's log only).
NOT_STARTED = "MemberSense could not start: see the server's log"

#: Retry-After of that 503: the server will not fix itself.
_RETRY_AFTER_S = 60

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class StartupRefused(RuntimeError):
    """This server cannot run MemberSense as configured; the message says what to change."""


class ThreadsDisabled(StartupRefused):
    """uWSGI runs no Python threads besides its own request loop."""


def server_module() -> ModuleType | None:
    """The module of the server hosting this interpreter (``uwsgi`` or ``mod_wsgi``), if any."""
    try:
        import uwsgi  # only importable inside uWSGI
    except ImportError:
        pass
    else:
        return uwsgi
    # Inside Apache, mod_wsgi's own module is there before the app is imported; the PyPI
    # package of the same name (mod_wsgi-express outside Apache) has no process_group.
    mod_wsgi = sys.modules.get("mod_wsgi")
    if mod_wsgi is not None and hasattr(mod_wsgi, "process_group"):
        return mod_wsgi
    return None


def process_count() -> int | None:
    """How many processes the hosting server runs, where it says so (uWSGI, mod_wsgi).

    A mod_wsgi daemon group counts its own processes; embedded mode counts
    Apache's child processes.
    """
    module = server_module()
    if module is None:
        return None
    if module.__name__ == "uwsgi":
        return int(getattr(module, "numproc", 1))
    return int(getattr(module, "maximum_processes", 1))


def check_threads() -> None:
    """Raise :class:`ThreadsDisabled` under a uWSGI that runs no Python threads."""
    module = server_module()
    if (
        module is not None
        and module.__name__ == "uwsgi"
        and not getattr(module, "has_threads", True)
    ):
        raise ThreadsDisabled(
            "uWSGI runs no Python threads here, so MemberSense's Discord bridge (a thread) "
            "would never run: set enable-threads = true (see deploy/uwsgi.ini)"
        )


def wsgi_app(create_app: Callable[[], Flask]) -> WSGIApp:
    """The app ``wsgi.py`` serves: built, logging configured, closed on the server's stop.

    A refusal (:class:`StartupRefused`, :class:`~membersense.processes.SeveralProcesses`)
    or a bad setting is one line on stderr instead of a traceback; under mod_wsgi every
    request then gets 503 (see the module docstring), elsewhere the import fails.
    """
    try:
        check_threads()
        app = create_app()
    except (StartupRefused, ConfigError) as exc:
        line = f"membersense: {exc}"
        module = server_module()
        if module is not None and module.__name__ == "mod_wsgi":
            print(line, file=sys.stderr, flush=True)
            return _refusal_app(str(exc) if isinstance(exc, StartupRefused) else NOT_STARTED)
        _print_refusals_as_one_line()
        raise StartupRefused(line) from None
    configure_logging(app.config["SETTINGS"])
    close_on_shutdown(runtime_of(app))
    return app


def close_on_shutdown(runtime: Runtime) -> None:
    """Close *runtime* when the server stops this process (see the module docstring)."""
    atexit.register(runtime.close)
    module = server_module()
    if module is None:
        return
    if module.__name__ == "uwsgi":
        chained = getattr(module, "atexit", None)

        def at_uwsgi_exit() -> None:
            runtime.close()
            if callable(chained):
                chained()

        module.atexit = at_uwsgi_exit  # type: ignore[attr-defined]  # uWSGI reads it at exit
    elif hasattr(module, "subscribe_shutdown"):
        # mod_wsgi calls it with the event's name and details (mod_wsgi 4 to 6 differ).
        module.subscribe_shutdown(lambda *event, **details: _close_after_grace(runtime))


def _close_after_grace(runtime: Runtime) -> None:
    runtime.refuse_new()
    runtime.wait_closed(IN_FLIGHT_GRACE_S)  # atexit may close it sooner
    runtime.close()


def _refusal_app(message: str) -> WSGIApp:
    body = json.dumps({"error": message}).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Retry-After", str(_RETRY_AFTER_S)),
    ]

    def refuse(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("503 SERVICE UNAVAILABLE", headers)
        return [body]

    return refuse


def _print_refusals_as_one_line() -> None:
    """Servers (uWSGI) print a failed import with ``sys.excepthook``: ours, as its line."""
    previous = sys.excepthook
    if getattr(previous, "membersense", False):
        return

    def excepthook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        if isinstance(value, StartupRefused):
            print(value, file=sys.stderr, flush=True)
        else:
            previous(kind, value, tb)

    excepthook.membersense = True  # type: ignore[attr-defined]  # installed once
    sys.excepthook = excepthook
