"""The dashboard: a small static web client of this API, at ``/``."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from membersense.extensions import rate_limiting

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"

bp = Blueprint("dashboard", __name__)
# Static files cost nothing to serve; loading the page must not eat the API budget.
rate_limiting.exempt(bp)


@bp.after_request
def _security_headers(response: Response) -> Response:
    # Scripts and styles only from here; avatars may come from Discord's CDN.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' https: data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return response


@bp.get("/")
def index() -> Response:
    """The dashboard page."""
    return send_from_directory(WEB_ROOT, "index.html", max_age=0)


@bp.get("/dashboard/<path:filename>")
def asset(filename: str) -> Response:
    """The dashboard's scripts and styles."""
    return send_from_directory(WEB_ROOT, filename, max_age=300)
