"""MemberSense plus two test routes that say which worker answered (tests/multiworker_gunicorn.py)."""

import os

from membersense import create_app, metrics

app = create_app()


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
