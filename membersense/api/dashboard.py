"""The dashboard: a small static web client of this API, at ``/``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, send_from_directory

from membersense.extensions import rate_limiting

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"

bp = Blueprint("dashboard", __name__)
# Static files cost nothing to serve; loading the page must not eat the API budget.
rate_limiting.exempt(bp)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@bp.after_request
def _security_headers(response: Response) -> Response:
    # Scripts and styles only from here; pictures from here and from the CDN that
    # avatar, icon and attachment URLs name (DISCORD_CDN_BASE).
    cdn = _origin(current_app.config["SETTINGS"].discord_cdn_base)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; img-src 'self' data: {cdn}; connect-src 'self'; "
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
