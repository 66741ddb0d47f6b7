"""MemberSense plus two test routes that say which worker answered (tests/multiworker_gunicorn.py)."""

import os

from membersense import create_app, metrics

app = create_app()
_serve = app.wsgi_app


def _as_one_process(environ: dict, start_response: object) -> object:
    # Memory mode answers 503 to a server that says it runs several processes
    # (membersense.processes); these tests want two workers' metrics, not sessions.
    return _serve({**environ, "wsgi.multiprocess": False}, start_response)


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
