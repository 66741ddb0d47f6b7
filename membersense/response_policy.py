"""What every response of the app carries, whatever view or error produced it.

- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
- API answers (``/api/...``) carry guild data fetched with a session:
  ``Cache-Control: private, no-cache`` and ``Vary: Authorization``, so no
  shared cache keeps them and a browser revalidates before each use
  (``If-None-Match`` on members gets a ``304``). Not ``no-store``, which
  would end that revalidation. Login and logout answers are ``no-store``:
  a session id is a credential, and nothing there is worth revalidating. A
  view may set its own (``no-store`` for a stream ticket or a webhook's
  secret, ``no-cache`` for an event stream).
- ``OPTIONS`` without CORS preflight headers is a ``204`` with ``Allow`` and
  no body (Flask would send an empty ``text/html`` ``200``).
- Paths are matched as sent: werkzeug would answer ``//api/members`` with an
  HTML ``308`` to ``/api/members``; here it is a JSON ``404`` like any other
  unknown path.

The headers the server writes itself, for requests that never reach the app,
are in :mod:`membersense.raw_responses`.
"""

from __future__ import annotations

from flask import Flask, Response, request

__all__ = ["CREDENTIAL_CACHE_CONTROL", "GUILD_DATA_CACHE_CONTROL", "init_app"]

GUILD_DATA_CACHE_CONTROL = "private, no-cache"
CREDENTIAL_CACHE_CONTROL = "no-store"


def _apply(response: Response) -> Response:
    headers = response.headers
    # add(), not item assignment: nothing else writes these two, so skip set()'s scan.
    headers.add("X-Content-Type-Options", "nosniff")
    headers.add("Referrer-Policy", "no-referrer")
    req = request._get_current_object()  # type: ignore[attr-defined]
    path = req.path
    if path.startswith("/api/"):
        if path.startswith("/api/auth/"):
            headers["Cache-Control"] = CREDENTIAL_CACHE_CONTROL
        else:
            # One pass over the headers finds both (a lookup each would be a pass each).
            cache_control = vary = None
            for name, value in headers:
                lowered = name.lower()
                if lowered == "cache-control":
                    cache_control = value
                elif lowered == "vary":
                    vary = value
            # A view may say more (no-store for an answer that holds a secret).
            if cache_control is None:
                headers.add("Cache-Control", GUILD_DATA_CACHE_CONTROL)
            if vary is None:
                headers.add("Vary", "Authorization")
            else:
                headers["Vary"] = f"{vary}, Authorization"
    if (
        req.method == "OPTIONS"
        and response.status_code == 200
        and not response.direct_passthrough
        and not response.get_data()
    ):
        _bodiless(response)
    return response


def _bodiless(response: Response) -> None:
    response.status_code = 204
    response.headers.pop("Content-Type", None)
    response.headers.pop("Content-Length", None)


def init_app(app: Flask) -> None:
    """Apply the policy to every response of *app* (call before registering blueprints)."""
    # Rules take the map's setting when they are added.
    app.url_map.merge_slashes = False
    app.after_request(_apply)
