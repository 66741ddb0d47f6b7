"""Memory mode says what it cannot do: serve from several processes.

Without a shared store, sessions and bot connections live in one process; a
second process would answer 401 for every session made in the first. So
several processes are refused as early as the server allows:

- gunicorn with more than one worker exits at start (see
  :mod:`membersense.serving`);
- uWSGI and mod_wsgi say how many processes they run (``uwsgi.numproc``,
  ``mod_wsgi.maximum_processes``, read by :func:`membersense.hosting.process_count`):
  :func:`check_host` refuses at import;
- any other server that sets ``wsgi.multiprocess`` gets a 503 with the same
  sentence on every request, logged once (:func:`init_app`).
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, request

from membersense.errors import ServiceUnavailable
from membersense.hosting import StartupRefused, process_count

__all__ = ["MULTIPROCESS_REFUSAL", "SeveralProcesses", "check_host", "init_app"]

log = logging.getLogger("membersense")

#: The one sentence every refusal uses.
MULTIPROCESS_REFUSAL = (
    "MemberSense keeps sessions in process memory and this server runs several processes: "
    "run one process (THREADS gives concurrency) or set REDIS_URL to share sessions between "
    "processes"
)

#: Retry-After of the 503: the server will not fix itself; a client need not hammer it.
_RETRY_AFTER_S = 60


class SeveralProcesses(StartupRefused):
    """The hosting server runs several processes; memory mode cannot serve them."""


def check_host() -> None:
    """Raise :class:`SeveralProcesses` under a server known to run several processes."""
    count = process_count()
    if count is not None and count > 1:
        raise SeveralProcesses(f"{MULTIPROCESS_REFUSAL} (this one runs {count})")


def init_app(app: Flask) -> None:
    """Answer 503 (logged once) when the server says it runs several processes."""
    logged = threading.Event()

    @app.before_request
    def _refuse_several_processes() -> None:
        if request.environ.get("wsgi.multiprocess"):
            if not logged.is_set():
                logged.set()
                log.error(MULTIPROCESS_REFUSAL)
            raise ServiceUnavailable(MULTIPROCESS_REFUSAL, retry_after=_RETRY_AFTER_S)
