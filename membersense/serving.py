"""How gunicorn serves MemberSense: its settings and lifecycle hooks.

``gunicorn.conf.py`` (used by the Procfile, the Dockerfile and ``membersense
serve``) takes everything from here, so there is one place that decides how
the app is served:

- one worker process: sessions and their Discord connections live in the
  worker's memory, so a second worker would not know the first one's
  sessions. Asking for more workers (``-w``) is refused at start-up.
- MemberSense's worker (:mod:`membersense.worker`, gthread that reads each
  request in full, under deadlines, before a thread serves it) with
  ``THREADS`` threads: request handlers block on the Discord bridge, so
  threads, not async workers, give concurrency, and slow clients must not
  hold them.
- a graceful timeout inside Cloud Run's 10 s SIGTERM grace period. On
  SIGTERM new logins are refused at once, requests in flight get
  ``IN_FLIGHT_GRACE_S`` to finish, then every session and the Discord bridge
  close, ending whatever still waits on Discord with a 503. gunicorn itself
  would wait up to its graceful timeout for those requests (a login may wait
  up to ``LOGIN_TIMEOUT``) and only then run ``worker_exit``, a moment before
  its SIGKILL.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from gunicorn import glogging

from membersense.config import Settings, load_settings
from membersense.logs import make_handler

__all__ = ["GunicornLogger", "gunicorn_options"]

#: Cloud Run sends SIGKILL 10 s after SIGTERM; leave room for the hook.
GRACEFUL_TIMEOUT_S = 8
#: After SIGTERM, how long requests in flight may go on before Discord work is cut short.
IN_FLIGHT_GRACE_S = 2.0


def gunicorn_options(settings: Settings | None = None) -> dict[str, Any]:
    """gunicorn settings for MemberSense (the names of gunicorn's config file)."""
    settings = settings or load_settings()
    return {
        "bind": [f"0.0.0.0:{settings.port}"],
        "workers": 1,
        "worker_class": "membersense.worker.MemberSenseWorker",
        "threads": settings.threads,
        # A request is bounded by LOGIN_TIMEOUT / DISCORD_TIMEOUT; the worker
        # timeout only catches a wedged process.
        "timeout": max(30, int(settings.login_timeout_s) + 10),
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": 5,
        # gunicorn 24+ opens a management socket in $HOME by default; several
        # instances (tests, containers with a read-only home) would collide.
        "control_socket_disable": True,
        # Our app logs one access line per request itself.
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "logger_class": GunicornLogger,
        "on_starting": on_starting,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
    }


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's own messages in MemberSense's log format; no gunicorn access log.

    The app writes one access line per request itself. (Configuring
    gunicorn through ``logconfig_dict`` instead would make it build its
    access-log fields for every request, only to drop them.)
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        handler = make_handler(load_settings().log_format)
        for old in list(self.error_log.handlers):
            self.error_log.removeHandler(old)
        self.error_log.addHandler(handler)

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """Nothing: see the class docstring."""


def on_starting(server: Any) -> None:
    """Refuse more than one worker: sessions are per process."""
    workers = server.cfg.workers
    if workers != 1:
        raise SystemExit(
            f"MemberSense keeps sessions in process memory and must run with one worker "
            f"(got {workers}); scale with THREADS or more instances instead"
        )


#: Set when gunicorn has drained the worker's requests (or given up on them).
_drained = threading.Event()


def _shut_down_after_grace() -> None:
    from membersense import extensions

    extensions.refuse_new_sessions()
    _drained.wait(IN_FLIGHT_GRACE_S)
    extensions.shutdown()


def post_worker_init(worker: Any) -> None:
    """Start closing down when SIGTERM arrives, not once gunicorn has drained."""
    handle_exit = worker.handle_exit

    def on_sigterm(signum: int, frame: Any) -> None:
        handle_exit(signum, frame)
        threading.Thread(target=_shut_down_after_grace, name="membersense-shutdown",
                         daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_exit(server: Any, worker: Any) -> None:
    """Close every session and the Discord bridge as the worker leaves (if not done yet)."""
    from membersense import extensions

    _drained.set()
    extensions.shutdown()
