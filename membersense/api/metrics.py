"""``GET /metrics``: Prometheus metrics, for operators only.

Served only when ``METRICS_TOKEN`` is set (then ``Authorization: Bearer
<token>`` is required) or ``METRICS_PUBLIC=1`` (for a private port or
network); otherwise the route does not exist and the path is a 404 like any
other unknown one. Never rate limited: a scraper polls on its own schedule.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Flask, Response, current_app, request

from membersense import metrics
from membersense.config import Settings
from membersense.errors import Unauthorized
from membersense.extensions import rate_limiting
from membersense.runtime import runtime_of

__all__ = ["bp", "init_app"]

bp = Blueprint("metrics", __name__)
rate_limiting.exempt(bp)


def init_app(app: Flask, settings: Settings) -> None:
    """Serve ``/metrics`` and measure every request, when *settings* enable metrics."""
    if not settings.metrics_enabled:
        return  # nothing can read them: no per-request cost either
    app.after_request(metrics.record_request)
    app.register_blueprint(bp)


def _check_token(expected: str) -> None:
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the time taken must not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        supplied.strip().encode(), expected.encode()
    ):
        error = Unauthorized()
        error.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        raise error


@bp.get("/metrics")
def scrape() -> Response:
    """Every metric in Prometheus' text format."""
    settings: Settings = current_app.config["SETTINGS"]
    if settings.metrics_token:
        _check_token(settings.metrics_token)
    metrics.set_active_sessions(runtime_of(current_app).store.count())
    body, content_type = metrics.exposition()
    return current_app.response_class(body, content_type=content_type)
