"""``GET /_ah/health`` (liveness) and ``GET /_ah/ready`` (readiness) for load balancers,
Cloud Run, Kubernetes and Docker."""

from __future__ import annotations

from flask import Blueprint, current_app

from membersense.errors import ServiceUnavailable
from membersense.extensions import rate_limiting
from membersense.runtime import runtime_of

#: Retry-After of a 503 from the readiness check.
NOT_READY_RETRY_AFTER_S = 1

bp = Blueprint("health", __name__)
# Probes must never be throttled, whatever else the address sends.
rate_limiting.exempt(bp)


@bp.get("/_ah/health")
def health() -> dict[str, str]:
    """Answer 200 while the process runs (liveness); needs no session, touches nothing."""
    return {"status": "healthy"}


@bp.get("/_ah/ready")
def ready() -> dict[str, str]:
    """200 while this process can serve: not shutting down and, in Redis mode, Redis answers.

    503 otherwise, so a load balancer sends requests elsewhere meanwhile.
    """
    if not runtime_of(current_app).ready():
        raise ServiceUnavailable("Not ready", retry_after=NOT_READY_RETRY_AFTER_S)
    return {"status": "ready"}
