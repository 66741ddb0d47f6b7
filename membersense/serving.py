"""How gunicorn serves MemberSense: its settings and lifecycle hooks.

``gunicorn.conf.py`` (used by the Procfile, the Dockerfile and ``membersense
serve``) takes everything from here, so there is one place that decides how
the app is served:

- one worker process in memory mode: sessions and their Discord connections
  live in the worker's memory, so a second worker would not know the first
  one's sessions. Asking for more workers (``-w``) is refused at start-up
  with one line naming ``REDIS_URL``; ``WEB_CONCURRENCY``, which platforms
  such as Heroku set on their own, is ignored with a log line saying so.
  Redis mode runs ``WEB_CONCURRENCY`` workers, by default the CPUs this
  process may use.
- MemberSense's worker (:mod:`membersense.worker`: gthread that reads each
  request in full, under deadlines, before a thread serves it) with
  ``THREADS`` threads: request handlers block on the Discord bridge, so
  threads, not async workers, give concurrency, and slow clients must not
  hold them. What may hold a thread for long is bounded by shares of
  ``THREADS``: event streams and waiting long-polls at most half
  (:mod:`membersense.events.live`), message-history reads, logins and sends
  an eighth each (:mod:`membersense.bulkhead`), so an eighth always serves
  health checks and cached reads.
- a graceful timeout inside Cloud Run's 10 s SIGTERM grace period. On
  SIGTERM new logins are refused at once, requests in flight get
  ``IN_FLIGHT_GRACE_S`` to finish, then every session and the Discord bridge
  close, ending whatever still waits on Discord with a 503. gunicorn itself
  would wait up to its graceful timeout for those requests (a login may wait
  up to ``LOGIN_TIMEOUT``) and only then run ``worker_exit``, a moment before
  its SIGKILL. Both paths end in the app's one
  :meth:`~membersense.runtime.Runtime.close`.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

from gunicorn import glogging

from membersense import metrics
from membersense.config import Settings, load_settings
from membersense.logs import make_handler
from membersense.processes import MULTIPROCESS_REFUSAL
from membersense.runtime import IN_FLIGHT_GRACE_S, Runtime, runtime_of

__all__ = ["GunicornLogger", "gunicorn_options"]

#: Cloud Run sends SIGKILL 10 s after SIGTERM; leave room for the hook.
GRACEFUL_TIMEOUT_S = 8


def gunicorn_options(settings: Settings | None = None) -> dict[str, Any]:
    """gunicorn settings for MemberSense (the names of gunicorn's config file)."""
    settings = settings or load_settings()
    return {
        "bind": [f"0.0.0.0:{settings.port}"],
        # Memory mode: one process (see on_starting). Redis mode: WEB_CONCURRENCY, else
        # the CPUs this process may use.
        "workers": (settings.web_concurrency or available_cpus()) if settings.redis_mode else 1,
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
        "when_ready": metrics.gunicorn_when_ready,
        "child_exit": metrics.gunicorn_child_exit,
        "on_exit": metrics.gunicorn_on_exit,
    }


class GunicornLogger(glogging.Logger):
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


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota.

    ``os.cpu_count()`` reports the host's CPUs, also inside a container limited to two.
    """
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, quota)) if quota is not None else max(1, cpus)


def _cgroup_cpu_quota() -> int | None:
    cgroup = Path("/sys/fs/cgroup")
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else math.ceil(int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
        period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        return None if int(quota) <= 0 else math.ceil(int(quota) / int(period))
    except (OSError, ValueError):
        return None


def on_starting(server: Any) -> None:
    """Refuse more than one worker in memory mode: sessions are per process there."""
    if load_settings().redis_mode:
        server.log.info("Redis mode: %s worker processes", server.cfg.workers)
        return
    workers = server.cfg.workers
    if workers != 1:
        raise SystemExit(
            f"membersense: {MULTIPROCESS_REFUSAL} (gunicorn was asked for {workers} workers)"
        )
    concurrency = os.environ.get("WEB_CONCURRENCY")
    if concurrency and concurrency.strip() != "1":
        server.log.info(
            "WEB_CONCURRENCY=%s is ignored in memory mode: one worker process "
            "(set REDIS_URL to run several)",
            concurrency.strip()[:20],
        )


def _runtime(worker: Any) -> Runtime | None:
    # MemberSense's worker wraps the app it loaded (gunicorn_compat); __wrapped__ is the app.
    app = getattr(worker.wsgi, "__wrapped__", worker.wsgi)
    try:
        return runtime_of(app)
    except (AttributeError, KeyError, TypeError):  # not an app create_app built
        return None


def post_worker_init(worker: Any) -> None:
    """Start closing down when SIGTERM arrives, not once gunicorn has drained."""
    runtime = _runtime(worker)
    if runtime is None:
        return
    handle_exit = worker.handle_exit

    def shut_down_after_grace() -> None:
        runtime.refuse_new()
        runtime.wait_closed(IN_FLIGHT_GRACE_S)  # worker_exit may close it sooner
        runtime.close()

    def on_sigterm(signum: int, frame: Any) -> None:
        handle_exit(signum, frame)
        threading.Thread(
            target=shut_down_after_grace, name="membersense-shutdown", daemon=True
        ).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_exit(server: Any, worker: Any) -> None:
    """Close every session and the Discord bridge as the worker leaves (if not done yet)."""
    runtime = _runtime(worker)
    if runtime is not None:
        runtime.close()
