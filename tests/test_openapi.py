"""The OpenAPI document: valid, complete (every route, every error), served, shown, and
the contract checker that holds every test's responses to it (tests/contract.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from openapi_spec_validator import validate

from membersense.api.docs import ASSETS
from membersense.bus import EVENT_TYPES
from membersense.config import Settings
from membersense.extensions import rate_limiting
from membersense.openapi import build_document
from tests.contract import Contract, ContractViolation

CONFIGURATIONS = {
    "default": {},
    "public metrics": {"METRICS_PUBLIC": "1"},
    "metrics token": {"METRICS_TOKEN": "openapi-test-token-123"},
}
_FLASK_METHODS = {"HEAD", "OPTIONS"}  # added by Flask to every GET / every route


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item}


def registered(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(path, method) for method in (rule.methods or set()) - _FLASK_METHODS}
    return routes


@pytest.mark.parametrize("config", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_every_route_is_documented_and_nothing_else(
    make_app: Callable[..., Flask], config: dict[str, str]
) -> None:
    app = make_app(**config)
    document = app.test_client().get("/api/openapi.json").get_json()
    assert registered(app) == documented(document)


@pytest.mark.parametrize("config", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_the_document_is_valid_openapi_3_1(config: dict[str, str]) -> None:
    document = build_document(Settings.from_mapping(config))
    assert document["openapi"] == "3.1.0"
    validate(document)  # the OpenAPI 3.1 specification's own schema


def test_every_operation_documents_its_shared_errors(make_app: Callable[..., Flask]) -> None:
    app = make_app(METRICS_TOKEN="openapi-test-token-123")
    document = build_document(app.config["SETTINGS"])
    components = document["components"]
    endpoints = {
        re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule): rule.endpoint
        for rule in app.url_map.iter_rules()
    }
    for path, item in document["paths"].items():
        blueprint = endpoints[path].split(".")[0]
        rate_limited = blueprint not in rate_limiting._exempt_blueprints
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert "500" in responses, where
            assert ("429" in responses) == rate_limited, where
            if operation["security"]:
                assert "401" in responses, where
            for status, response in responses.items():
                headers = response.get("headers", {})
                assert "X-Request-ID" in headers, (where, status)
                assert ("RateLimit-Remaining" in headers) == rate_limited, (where, status)
                if int(status) >= 400:
                    (media,) = response["content"].values()
                    schema = media["schema"]["$ref"].rsplit("/", 1)[1]
                    retry = status in ("429", "503")
                    assert schema == ("RetryableError" if retry else "Error"), (where, status)
                    assert ("Retry-After" in headers) == retry, (where, status)
                    if retry:
                        ref = headers["Retry-After"]["$ref"].rsplit("/", 1)[1]
                        assert components["headers"][ref]["required"] is True
    members = document["paths"]["/api/members"]["get"]["responses"]
    assert {"ETag", "Vary"} <= set(members["200"]["headers"]) and "304" in members
    assert document["components"]["securitySchemes"]["session"] == {
        **document["components"]["securitySchemes"]["session"],
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
    }


def test_the_document_and_its_page_are_served(make_app: Callable[..., Flask]) -> None:
    app = make_app(RATE_LIMIT_MAX_REQUESTS=1)
    client = app.test_client()
    for _ in range(3):  # static: never rate limited
        response = client.get("/api/openapi.json")
        assert response.status_code == 200
    assert response.get_json() == build_document(app.config["SETTINGS"])
    with client.get("/api/docs") as page:
        assert page.status_code == 200 and page.mimetype == "text/html"
        html = page.get_data(as_text=True)
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "http" not in policy  # no other origin
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.DOTALL)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    for src in re.findall(r'(?:src|href)="(docs/[^"]+)"', html):
        with client.get(f"/api/{src}") as asset:
            assert asset.status_code == 200, src
            assert "Content-Security-Policy" in asset.headers
    assert client.get("/api/docs/nothing.js").status_code == 404


def test_the_docs_script_renders_without_html_injection() -> None:
    script = (ASSETS / "apidocs.js").read_text()
    assert "innerHTML" not in script and "eval(" not in script
    assert 'fetch("openapi.json"' in script


# -- the checker itself must be able to fail ---------------------------------------------


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract(build_document(Settings.from_mapping({})))


JSON = {"Content-Type": "application/json", "X-Request-ID": "r1"}
LIMITS = {
    "RateLimit-Limit": "100",
    "RateLimit-Remaining": "99",
    "RateLimit-Reset": "60",
    "RateLimit-Policy": "100;w=60",
}


@pytest.mark.parametrize(
    ("method", "path", "status", "headers", "body", "complaint"),
    [
        ("GET", "/api/members", 201, {**JSON, **LIMITS}, b"[]", "not documented"),
        ("GET", "/api/members", 200, {**JSON, **LIMITS, "Vary": "Accept-Encoding"}, b"[]", "ETag"),
        (
            "GET",
            "/api/members",
            200,
            {**JSON, **LIMITS, "ETag": '"e"', "Vary": "x"},
            b'[{"id": "1"}]',
            "required property",
        ),
        ("GET", "/api/channels", 200, {**JSON, "RateLimit-Limit": "100"}, b"[]", "missing"),
        (
            "GET",
            "/api/channels",
            429,
            {**JSON, **LIMITS},
            b'{"error": "Too many requests"}',
            "Retry-After",
        ),
        (
            "GET",
            "/api/channels",
            400,
            {**LIMITS, "X-Request-ID": "r1", "Content-Type": "text/html"},
            b"<p>oops</p>",
            "media type",
        ),
        ("GET", "/api/channels", 400, {**JSON, **LIMITS}, b'{"message": "x"}', "'message'"),
        (
            "POST",
            "/api/auth/login",
            503,
            {**JSON, **LIMITS, "Retry-After": "0"},
            b'{"error": "full", "retryAfter": 1}',
            "Retry-After",
        ),
        ("GET", "/not/documented", 200, JSON, b"{}", "error"),
        ("DELETE", "/api/members", 404, JSON, b'{"error": "Not Found"}', "405"),
        (
            "GET",
            "/nowhere",
            404,
            {"Content-Type": "application/json"},
            b'{"error": "Not Found"}',
            "X-Request-ID",
        ),
        ("GET", "/_ah/health", 304, {"X-Request-ID": "r1"}, b"", "not documented"),
        ("GET", "/api/events/poll", 200, {**JSON, **LIMITS}, b"[]", "X-Event-Cursor"),
        (
            "GET",
            "/api/events/poll",
            200,
            {**JSON, **LIMITS, "X-Event-Cursor": "a-1"},
            b'{"reset": false, "cursor": "a-1"}',
            "not valid under any",
        ),
        (
            "POST",
            "/api/webhooks",
            429,
            {**JSON, **LIMITS},
            b'{"error": "Too many webhooks"}',
            "Retry-After",
        ),
    ],
)
def test_the_checker_rejects_what_the_document_does_not_allow(
    contract: Contract,
    method: str,
    path: str,
    status: int,
    headers: dict[str, str],
    body: bytes,
    complaint: str,
) -> None:
    with pytest.raises(ContractViolation, match=complaint):
        contract.check(method, path, status, headers, body)


def test_the_checker_accepts_what_the_document_allows(contract: Contract) -> None:
    contract.check(
        "GET",
        "/api/members",
        304,
        {**LIMITS, "X-Request-ID": "r", "ETag": '"e"', "Vary": "Accept-Encoding"},
        b"",
    )
    contract.check("HEAD", "/_ah/health", 200, JSON, b"")
    contract.check("GET", "/nowhere", 404, JSON, b'{"error": "Not Found"}')
    contract.check(
        "PUT", "/api/members", 405, {**JSON, "Allow": "GET"}, b'{"error": "Method Not Allowed"}'
    )
    contract.check(
        "GET",
        "/api/events/poll",
        200,
        {**JSON, **LIMITS, "X-Event-Cursor": "a-9"},
        b'{"reset": true, "cursor": "a-9"}',
    )
    contract.check(
        "GET",
        "/api/events",
        200,
        {**LIMITS, "X-Request-ID": "r", "Content-Type": "text/event-stream"},
        None,
    )
    # Refused before the rate limit counted it (memory mode under several processes).
    contract.check(
        "GET",
        "/_ah/health",
        503,
        {**JSON, "Retry-After": "60"},
        b'{"error": "several processes", "retryAfter": 60}',
    )


# -- events: the stream's frames and webhook deliveries ------------------------------------

MEMBER = {
    "id": "7",
    "username": "newbie",
    "displayName": "newbie",
    "avatar": "https://cdn.discordapp.com/embed/avatars/0.png",
    "roles": ["@everyone"],
    "role": "@everyone",
    "joinedAt": None,
    "bot": False,
    "roleColor": None,
}


def test_every_event_type_has_its_data_documented() -> None:
    document = build_document(Settings.from_mapping({}))
    variants = document["components"]["schemas"]["Event"]["oneOf"]
    documented_types = [t for variant in variants for t in variant["properties"]["type"]["enum"]]
    assert sorted(documented_types) == sorted(EVENT_TYPES)
    delivery = document["webhooks"]["event"]["post"]
    assert delivery["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Event"
    }


def test_the_checker_holds_stream_frames_to_the_event_schema(contract: Contract) -> None:
    contract.check_frame({"id": "ab12-3", "event": "member.join", "data": json.dumps(MEMBER)})
    contract.check_frame(
        {"id": "ab12-4", "event": "message.delete", "data": '{"id": "9", "channelId": "500"}'}
    )
    contract.check_frame({"id": "ab12-4", "event": "reset", "data": "{}"})
    contract.check_frame({"event": "end", "data": '{"reason": "session ended"}'})
    contract.check_frame({"retry": "1000"})
    for fields, complaint in [
        (
            {"id": "ab12-5", "event": "message.create", "data": json.dumps(MEMBER)},
            "message.create",
        ),  # a member is no message
        (
            {"id": "ab12-5", "event": "member.join", "data": json.dumps({**MEMBER, "x": 1})},
            "'x' was unexpected",
        ),
        ({"id": "ab12-5", "event": "member.kick", "data": "{}"}, "undocumented event type"),
        ({"event": "member.join", "data": json.dumps(MEMBER)}, "no id"),
        ({"id": "ab12-5", "event": "reset", "data": '{"a": 1}'}, "reset"),
    ]:
        with pytest.raises(ContractViolation, match=complaint):
            contract.check_frame(fields)


def test_the_checker_holds_deliveries_to_the_documents_webhooks(contract: Contract) -> None:
    body = json.dumps(
        {
            "id": "ab12-3",
            "type": "member.join",
            "guildId": "100",
            "timestamp": 1_700_000_000_000,
            "data": MEMBER,
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-MemberSense-Event": "member.join",
        "X-MemberSense-Delivery": "ab12-3",
        "X-MemberSense-Timestamp": "1700000000",
        "X-MemberSense-Signature": "sha256=" + "0" * 64,
    }
    contract.check_delivery(headers, body)
    with pytest.raises(ContractViolation, match="X-MemberSense-Signature"):
        contract.check_delivery({**headers, "X-MemberSense-Signature": "md5=00"}, body)
    with pytest.raises(ContractViolation, match="delivery: body"):
        contract.check_delivery(headers, body.replace(b'"member.join"', b'"guild.update"'))
