"""``GET /_ah/health``: liveness for load balancers, Cloud Run and Docker."""

from __future__ import annotations

from flask import Blueprint

from membersense.extensions import rate_limiting

bp = Blueprint("health", __name__)
# Probes must never be throttled, whatever else the address sends.
rate_limiting.exempt(bp)


@bp.get("/_ah/health")
def health() -> dict[str, str]:
    """Answer 200 while the process can serve requests; needs no session."""
    return {"status": "healthy"}
