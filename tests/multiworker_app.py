"""MemberSense plus two test routes that say which worker answered (tests/multiworker_gunicorn.py)."""

import os
from typing import Any

from membersense import create_app, metrics

app = create_app()
_serve = app.wsgi_app


def _as_one_process(environ: dict[str, Any], start_response: Any) -> Any:
    # Memory mode answers every request 503 under a server that says it runs several
    # processes (membersense.processes); these workers share no sessions, only metrics.
    environ["wsgi.multiprocess"] = False
    return _serve(environ, start_response)


app.wsgi_app = _as_one_process  # type: ignore[method-assign]


class _Connection:
    """Stands for a gateway connection this worker holds."""


_connection = _Connection()


@app.get("/_test/pid")
def pid() -> dict[str, int]:
    """Which worker answered."""
    return {"pid": os.getpid()}


@app.post("/_test/gateway")
def gateway() -> dict[str, int]:
    """Count one live gateway connection in this worker."""
    metrics.gateway_event(_connection, "connect")
    return {"pid": os.getpid()}
