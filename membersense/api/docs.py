"""``GET /api/openapi.json`` (the API's OpenAPI 3.1 document) and ``GET /api/docs`` (a page showing it).

The page is plain HTML and a small script of ours (``membersense/apidocs/``)
that fetches the document and renders it: no framework, nothing from another
origin, no inline script, under a Content-Security-Policy that says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response, current_app, send_from_directory

from membersense.extensions import rate_limiting
from membersense.openapi import build_document

__all__ = ["ASSETS", "bp"]

ASSETS = Path(__file__).resolve().parent.parent / "apidocs"

bp = Blueprint("docs", __name__, url_prefix="/api")
# Static content, cheap to serve: reading the docs must not eat the API budget.
rate_limiting.exempt(bp)

_DOCUMENT_KEY = "membersense.openapi"


@bp.after_request
def _security_headers(response: Response) -> Response:
    # Our own script, style and document only; nothing inline, nothing framed. (The
    # other security headers are every response's: membersense.response_policy.)
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document of this server, as configured."""
    body = current_app.extensions.get(_DOCUMENT_KEY)
    if body is None:  # built once per app; a race builds the same bytes twice
        document = build_document(current_app.config["SETTINGS"])
        body = current_app.extensions[_DOCUMENT_KEY] = json.dumps(document, indent=1).encode()
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/docs")
def page() -> Response:
    """The docs page."""
    return send_from_directory(ASSETS, "index.html", max_age=0)


@bp.get("/docs/<path:filename>")
def asset(filename: str) -> Response:
    """The docs page's script and style."""
    return send_from_directory(ASSETS, filename, max_age=300)
