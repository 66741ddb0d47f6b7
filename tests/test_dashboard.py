"""The dashboard is served at / with its assets, under a strict CSP, never rate limited."""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse


def get(client: FlaskClient, path: str) -> TestResponse:
    """GET *path*, read the body and close the file behind it (send_file streams)."""
    response = client.get(path)
    response.get_data()
    response.close()
    return response


def test_the_page_and_every_asset_it_references_are_served(client: FlaskClient) -> None:
    page = get(client, "/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assets = re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', page.get_data(as_text=True))
    assert {"/dashboard/app.js", "/dashboard/style.css"} <= set(assets)
    assert '<link rel="icon" href="data:image/svg+xml,' in page.get_data(as_text=True)
    for asset in assets:
        response = get(client, asset)
        assert response.status_code == 200, asset
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]


def test_the_client_uses_the_api_as_the_web_client_does(client: FlaskClient) -> None:
    script = get(client, "/dashboard/app.js").get_data(as_text=True)
    for needle in (
        "/api/auth/login",
        "/api/members",
        "/api/channels",
        "/api/messages",
        "headers.Authorization = state.sessionId",
        "serverName",
        "memberCount",
        "sessionStorage.setItem(SESSION_KEY, answer.sessionId)",
    ):
        assert needle in script


def test_paths_outside_the_web_folder_are_404(client: FlaskClient) -> None:
    for path in ("/dashboard/../config.py", "/dashboard/%2e%2e/config.py", "/dashboard/nope.js"):
        response = get(client, path)
        assert response.status_code == 404
        assert response.get_json() == {"error": "Not Found"}


def test_loading_the_dashboard_costs_no_api_budget(make_app: Callable[..., Flask]) -> None:
    client = make_app(RATE_LIMIT_MAX_REQUESTS=1).test_client()
    for _ in range(3):
        assert get(client, "/").status_code == 200
        assert get(client, "/dashboard/app.js").status_code == 200
    assert client.get("/api/members").status_code == 401
    assert client.get("/api/members").status_code == 429


def test_pictures_may_come_from_the_configured_cdn_only(make_app: Callable[..., Flask]) -> None:
    default = get(make_app().test_client(), "/").headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://cdn.discordapp.com;" in default
    sandbox = get(make_app(DISCORD_CDN_BASE="http://127.0.0.1:8765/").test_client(), "/")
    assert (
        "img-src 'self' data: http://127.0.0.1:8765;" in sandbox.headers["Content-Security-Policy"]
    )


def test_the_page_may_connect_to_its_own_server_only(client: FlaskClient) -> None:
    # fetch() and the event stream: same origin, whatever the CDN.
    policy = get(client, "/").headers["Content-Security-Policy"]
    assert "connect-src 'self';" in policy and "script-src" not in policy  # default-src 'self'


def test_the_page_renders_data_as_text_only(client: FlaskClient) -> None:
    # The browser tests show it (an XSS message renders as text); this keeps the means in
    # plain sight: no HTML parsing of anything, and the token never goes into storage.
    script = get(client, "/dashboard/app.js").get_data(as_text=True)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "localStorage" not in script
    assert "sessionStorage.setItem(SESSION_KEY, answer.sessionId)" in script
    assert script.count("sessionStorage.setItem") == 1
