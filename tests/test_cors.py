"""CORS: one origin per answer, errors included; preflights advertise what clients send."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask


def test_wildcard_by_default(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    response = client.get("/_ah/health", headers={"Origin": "https://anything.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_no_cors_headers_without_origin(make_app: Callable[..., Flask]) -> None:
    # Only browsers read them, and they send Origin; health checks and servers get none.
    client = make_app().test_client()
    for path in ("/_ah/health", "/api/members"):
        headers = client.get(path).headers
        assert [name for name in headers.keys() if name.startswith("Access-Control-")] == []
    preflight = client.options("/api/members", headers={"Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    # ... without flask-cors's hook running at all (it costs a health check a seventh of its
    # time): it is wrapped, once.
    (hook,) = [
        hook
        for hook in make_app().after_request_funcs[None]
        if hook.__module__.startswith("flask_cors")
    ]
    assert hook.__wrapped__.__module__.startswith("flask_cors")  # type: ignore[attr-defined]  # set by functools.wraps


def test_several_origins_answer_with_the_requesting_one_only(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(ALLOWED_ORIGINS="https://a.example,https://b.example").test_client()
    allowed = client.get("/api/members", headers={"Origin": "https://b.example"})
    assert allowed.status_code == 401
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://b.example"
    assert "Origin" in allowed.headers.get("Vary", "")
    denied = client.get("/api/members", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in denied.headers


def test_a_single_allowed_origin_still_varies_on_origin(make_app: Callable[..., Flask]) -> None:
    client = make_app(ALLOWED_ORIGINS="https://a.example").test_client()
    for origin in ("https://a.example", "https://other.example"):
        response = client.get("/_ah/health", headers={"Origin": origin})
        assert "Origin" in response.headers.get("Vary", ""), origin


def test_preflight_allows_the_headers_the_web_client_sends(make_app: Callable[..., Flask]) -> None:
    client = make_app(ALLOWED_ORIGINS="https://a.example").test_client()
    response = client.options(
        "/api/members",
        headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization, X-Request-ID",
        },
    )
    # No content (browsers take any 2xx), not an empty text/html page.
    assert response.status_code == 204 and "Content-Type" not in response.headers
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "x-request-id" in allowed_headers
    methods = response.headers["Access-Control-Allow-Methods"]
    assert {"GET", "POST", "OPTIONS"} <= {m.strip() for m in methods.split(",")}


def test_clients_may_read_request_id_rate_limit_and_etag_headers(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app().test_client()
    response = client.get("/api/channels", headers={"Origin": "https://a.example"})
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {
        "X-Request-ID",
        "Retry-After",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "ETag",
    } <= exposed
