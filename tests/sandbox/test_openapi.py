"""Fidelity: every JSON body the sandbox's REST API can return validates against Discord's OpenAPI document.

The schema of each answer is looked up in the vendored document by the request's path
template, method and status (falling back to the document's ``4XX`` entry as Discord's
document does), never hand-picked; ``$ref``s resolve inside the document.  Formats the
document uses (snowflake, int32, int64, date-time, uri) are checked too.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from membersense.sandbox.rest import ROUTES

DOC_PATH = Path(__file__).resolve().parents[1] / "data" / "discord-openapi" / "openapi.json"
DOC_URI = "urn:discord-openapi"
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

_formats = FormatChecker(formats=())


@_formats.checks("snowflake")
def _snowflake(value: object) -> bool:
    return not isinstance(value, str) or (value.isdigit() and int(value) < 2**64)


@_formats.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_formats.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@_formats.checks("date-time")
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return (
        bool(_RFC3339.match(value))
        and dt.datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    )


@_formats.checks("uri")
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urllib.parse.urlsplit(value)
    return bool(parts.scheme and parts.netloc)


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@functools.cache
def _document() -> dict[str, Any]:
    return json.loads(DOC_PATH.read_text(encoding="utf-8"))


@dataclass
class OpenApi:
    """Finds and applies the document's schema for an answer (path template + method + status)."""

    doc: dict[str, Any] = field(default_factory=_document)
    #: (method, template, status) of every answer checked, for coverage assertions.
    checked: set[tuple[str, str, int]] = field(default_factory=set)
    #: Answers whose status the document has no schema for.
    undocumented: set[tuple[str, str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.registry = Registry().with_resource(
            DOC_URI, Resource.from_contents(self.doc, default_specification=DRAFT202012)
        )
        self._templates = []
        for template in self.doc["paths"]:
            regex = re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$")
            literal = len(re.sub(r"\{\w+\}", "", template))
            self._templates.append((regex, template, literal))
        # The most literal template wins (/users/@me over /users/{user_id}).
        self._templates.sort(key=lambda t: -t[2])

    def template_for(self, path: str) -> str | None:
        """The document's path template matching a concrete path, or None."""
        for regex, template, _ in self._templates:
            if regex.match(path):
                return template
        return None

    def schema_pointer(self, method: str, template: str | None, status: int) -> str | None:
        """JSON pointer (in the document) of the answer's JSON schema; None when the document has none."""
        if template is None:
            # Unknown routes have no operation; Discord answers them with its generic error body,
            # which the document describes as the shared ClientErrorResponse.
            response = self.doc["components"]["responses"]["ClientErrorResponse"]
            base = _pointer("components", "responses", "ClientErrorResponse")
        else:
            operation = self.doc["paths"][template].get(method.lower())
            if operation is None:
                # A 405 for a method the path lacks: again only the generic error shape applies.
                response = self.doc["components"]["responses"]["ClientErrorResponse"]
                base = _pointer("components", "responses", "ClientErrorResponse")
            else:
                responses = operation["responses"]
                key = str(status) if str(status) in responses else f"{status // 100}XX"
                if key not in responses:
                    return None  # e.g. 5xx: Discord's document describes no server-error bodies
                response = responses[key]
                base = _pointer("paths", template, method.lower(), "responses", key)
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[1]
            response = self.doc["components"]["responses"][name]
            base = _pointer("components", "responses", name)
        if "application/json" not in response.get("content", {}):
            return None
        return base + _pointer("content", "application/json", "schema")

    def check_request_body(self, method: str, template: str, body: Any) -> None:
        """Validate a JSON request body against the operation's ``application/json`` schema."""
        pointer = _pointer(
            "paths",
            template,
            method.lower(),
            "requestBody",
            "content",
            "application/json",
            "schema",
        )
        ref = f"{DOC_URI}#{urllib.parse.quote(pointer, safe='/~@')}"
        validator = Draft202012Validator(
            {"$ref": ref}, registry=self.registry, format_checker=_formats
        )
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(
            f"{method} {template}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in errors[:10]
        )

    def check(self, response: requests.Response, api_url: str) -> Any:
        """Validate one answer of the sandbox; returns its decoded JSON body (None for 204)."""
        path = urllib.parse.urlsplit(response.url).path
        prefix = urllib.parse.urlsplit(api_url).path
        assert path.startswith(prefix), path
        path = path[len(prefix) :]
        method = response.request.method or "GET"
        template = self.template_for(path)
        status = response.status_code
        self.checked.add((method, template or path, status))
        if status == 204:
            assert response.content == b""
            return None
        assert response.headers["Content-Type"] == "application/json", response.headers
        body = response.json()
        pointer = self.schema_pointer(method, template, status)
        if pointer is None:
            self.undocumented.add((method, template or path, status))
            return body
        ref = f"{DOC_URI}#{urllib.parse.quote(pointer, safe='/~@')}"
        validator = Draft202012Validator(
            {"$ref": ref}, registry=self.registry, format_checker=_formats
        )
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(
            f"{method} {path} {status}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in errors[:10]
        )
        return body


MAIN, OTHER, BARE = "main-token", "other-token", "bare-token"
SCENARIO = {
    "seed": 11,
    "bots": [
        {"token": MAIN},
        {"token": OTHER},
        # No privileged intents and no MANAGE_MESSAGES: member listing and deleting others' messages are refused.
        {"token": BARE, "privileged_intents": [], "permissions": "66560"},
    ],
    "guilds": [
        {
            "name": "Main",
            "members": 120,
            "channels": 3,
            "messages": 150,
            "bots": [MAIN, BARE],
            "hidden_channels": ["staff-only"],
            "read_only_channels": ["news"],
        },
        {"name": "Elsewhere", "members": 10, "channels": 1, "messages": 5, "bots": [OTHER]},
    ],
}


@pytest.fixture
def world_sandbox(sandbox_factory, tmp_path):
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(SCENARIO), encoding="utf-8")
    return sandbox_factory(scenario=str(path), tokens=())


def _ids(server) -> dict[str, Any]:
    """Ids the test needs, read on the sandbox thread."""

    def read() -> dict[str, Any]:
        world = server.world
        main, elsewhere = world.guilds.values()
        text = [c for c in main.channels if c.type == 0]
        return {
            "guild": main.id,
            "foreign_guild": elsewhere.id,
            "foreign_channel": next(c.id for c in elsewhere.channels if c.type == 0),
            "text": text[0].id,
            "hidden": next(c.id for c in text if c.name == "staff-only"),
            "read_only": next(c.id for c in text if c.name == "news"),
            "voice": next(c.id for c in main.channels if c.type == 2),
            "category": next(c.id for c in main.channels if c.type == 4),
            "member": main.owner_id,
            "messages": list(text[0].message_ids),
            "human_message": text[0].message_ids[-1],
        }

    return server.run(read)


def test_every_endpoint_answer_validates(world_sandbox, rest_client):
    api = OpenApi()
    client = rest_client(world_sandbox, token=MAIN)
    bare = rest_client(world_sandbox, token=BARE)
    ids = _ids(world_sandbox)
    g, text = ids["guild"], ids["text"]

    def ok(response: requests.Response, status: int = 200) -> Any:
        assert response.status_code == status, (response.status_code, response.text)
        return api.check(response, world_sandbox.api_url)

    # Successes of every GET endpoint.
    ok(client.get("/users/@me"))
    ok(client.get(f"/users/{ids['member']}"))
    ok(client.get("/oauth2/applications/@me"))
    ok(client.get("/applications/@me"))
    ok(client.get("/gateway", token=""))
    ok(client.get("/gateway/bot"))
    ok(client.get("/users/@me/guilds"))
    ok(client.get("/users/@me/guilds?with_counts=true&limit=1"))
    ok(client.get(f"/guilds/{g}"))
    ok(client.get(f"/guilds/{g}?with_counts=true"))
    ok(client.get(f"/guilds/{g}/channels"))
    ok(client.get(f"/guilds/{g}/roles"))
    members = ok(client.get(f"/guilds/{g}/members?limit=1000"))
    assert len(members) == 122
    ok(client.get(f"/guilds/{g}/members/search?query=a&limit=10"))
    ok(client.get(f"/guilds/{g}/members/{ids['member']}"))
    for channel in (text, ids["voice"], ids["category"]):
        ok(client.get(f"/channels/{channel}"))
    history = ok(client.get(f"/channels/{text}/messages?limit=100"))
    history += ok(client.get(f"/channels/{text}/messages?limit=100&before={history[-1]['id']}"))
    assert len(history) == 150
    kinds = {"reply": 0, "edited": 0, "attachment": 0, "embed": 0, "mention": 0}
    for message in history:
        kinds["reply"] += "referenced_message" in message
        kinds["edited"] += message["edited_timestamp"] is not None
        kinds["attachment"] += bool(message["attachments"])
        kinds["embed"] += bool(message["embeds"])
        kinds["mention"] += bool(message["mentions"])
    assert all(kinds.values()), kinds  # the generated history exercises every optional part
    ok(client.get(f"/channels/{text}/messages?after={ids['messages'][3]}&limit=5"))
    ok(client.get(f"/channels/{text}/messages?around={ids['messages'][40]}&limit=7"))
    ok(client.get(f"/channels/{ids['voice']}/messages"))
    ok(client.get(f"/channels/{text}/messages/{ids['human_message']}"))

    # Writes: plain, embeds + reply + mentions + nonce, multipart upload, edit, delete, typing.
    sent = ok(client.post(f"/channels/{text}/messages", json={"content": "hello sandbox"}))
    rich = ok(
        client.post(
            f"/channels/{text}/messages",
            json={
                "content": f"<@{ids['member']}> look",
                "nonce": "abc123",
                "tts": False,
                "message_reference": {"message_id": ids["human_message"]},
                "allowed_mentions": {"parse": ["users"], "replied_user": True},
                "embeds": [
                    {
                        "title": "Report",
                        "description": "All green",
                        "url": "https://example.com/r",
                        "color": 0x2ECC71,
                        "timestamp": "2025-01-01T00:00:00+00:00",
                        "fields": [{"name": "a", "value": "b", "inline": True}],
                        "footer": {"text": "sandbox", "icon_url": "https://example.com/i.png"},
                        "author": {"name": "bot", "url": "https://example.com"},
                        "image": {"url": "https://example.com/img.png"},
                        "thumbnail": {"url": "https://example.com/t.png"},
                    }
                ],
            },
        )
    )
    assert (
        rich["referenced_message"]["id"] == str(ids["human_message"]) and rich["nonce"] == "abc123"
    )
    # An idempotent send (enforce_nonce) and its repeat, which answers with the same message.
    once = ok(
        client.post(
            f"/channels/{text}/messages",
            json={
                "content": "once",
                "nonce": "idem-1",
                "enforce_nonce": True,
                "allowed_mentions": {"parse": []},
            },
        )
    )
    assert (
        ok(
            client.post(
                f"/channels/{text}/messages",
                json={"content": "once", "nonce": "idem-1", "enforce_nonce": True},
            )
        )["id"]
        == once["id"]
    )
    upload = ok(
        client.post(
            f"/channels/{text}/messages",
            data={"payload_json": json.dumps({"content": "file"})},
            files={"files[0]": ("report.txt", b"hello world", "text/plain")},
        )
    )
    assert upload["attachments"][0]["size"] == 11
    ok(client.patch(f"/channels/{text}/messages/{sent['id']}", json={"content": "edited"}))
    ok(client.delete(f"/channels/{text}/messages/{upload['id']}"), 204)
    ok(client.post(f"/channels/{text}/typing"), 204)
    # A reply whose referenced message is gone: referenced_message is null.
    reply = ok(
        client.post(
            f"/channels/{text}/messages",
            json={"content": "re", "message_reference": {"message_id": sent["id"]}},
        )
    )
    ok(client.delete(f"/channels/{text}/messages/{sent['id']}"), 204)
    assert ok(client.get(f"/channels/{text}/messages/{reply['id']}"))["referenced_message"] is None
    # Deleting a member's message (the bot has MANAGE_MESSAGES).
    ok(client.delete(f"/channels/{text}/messages/{ids['messages'][0]}"), 204)

    # Every route the sandbox serves has had a validated success.
    succeeded = {(m, t) for m, t, s in api.checked if s < 300}
    for route in ROUTES.routes:
        assert (route.method, route.template) in succeeded, route.key

    # Errors: each kind the endpoints produce.
    def fails(response: requests.Response, status: int, code: int) -> None:
        assert response.status_code == status, (response.status_code, response.text)
        body = api.check(response, world_sandbox.api_url)
        assert body["code"] == code, body

    fails(client.get("/users/@me", token="wrong"), 401, 0)
    fails(client.get("/users/@me", token=""), 401, 0)
    fails(client.get("/no/such/route"), 404, 0)
    fails(client.delete("/users/@me"), 405, 0)
    fails(client.get("/users/1"), 404, 10013)
    fails(client.get("/guilds/1"), 404, 10004)
    fails(client.get(f"/guilds/{ids['foreign_guild']}"), 403, 50001)
    fails(client.get(f"/guilds/{ids['foreign_guild']}/members"), 403, 50001)
    fails(client.get(f"/guilds/{g}/members/1"), 404, 10007)
    fails(bare.get(f"/guilds/{g}/members"), 403, 50001)
    fails(client.get("/channels/1"), 404, 10003)
    fails(client.get(f"/channels/{ids['foreign_channel']}"), 403, 50001)
    fails(client.get(f"/channels/{ids['hidden']}/messages"), 403, 50001)
    fails(client.get(f"/channels/{text}/messages/1"), 404, 10008)
    fails(client.post(f"/channels/{ids['category']}/messages", json={"content": "x"}), 400, 50008)
    fails(client.post(f"/channels/{ids['read_only']}/messages", json={"content": "x"}), 403, 50013)
    fails(bare.delete(f"/channels/{text}/messages/{ids['messages'][5]}"), 403, 50013)
    fails(
        client.patch(f"/channels/{text}/messages/{ids['messages'][6]}", json={"content": "x"}),
        403,
        50005,
    )
    fails(client.post(f"/channels/{text}/messages", json={}), 400, 50006)
    fails(
        client.post(
            f"/channels/{text}/messages",
            data=b"{nope",
            headers={"Content-Type": "application/json"},
        ),
        400,
        50109,
    )
    for query in ("limit=0", "limit=1001", "limit=x", "after=abc"):
        fails(client.get(f"/guilds/{g}/members?{query}"), 400, 50035)
    fails(client.get(f"/guilds/{g}?with_counts=maybe"), 400, 50035)
    fails(client.get(f"/channels/{text}/messages?limit=101"), 400, 50035)
    fails(client.get(f"/guilds/{g}/members/search"), 400, 50035)
    for body in (
        {"content": "x" * 2001},
        {"content": 5},
        [1, 2],
        {"embeds": [{"title": 7}]},
        {"embeds": [{}] * 11},
        {"content": "x", "message_reference": {"message_id": "1"}},
        {"content": "x", "allowed_mentions": {"parse": ["users"], "users": ["1"]}},
        {"content": "x", "allowed_mentions": {"parse": ["nobody"]}},
        {"content": "x", "nonce": "n" * 26},
        {"content": "x", "nonce": "n", "enforce_nonce": 1},
    ):
        fails(client.post(f"/channels/{text}/messages", json=body), 400, 50035)

    # Every error answer so far has a schema in the document (its 4XX entry).
    assert not api.undocumented, api.undocumented


def test_rate_limit_and_fault_answers_validate(sandbox_factory, rest_client):
    server = sandbox_factory(route_limits={"GET /users/@me": (1, 60.0)}, global_rate_limit=100)
    api = OpenApi()
    client = rest_client(server)
    assert client.get("/users/@me").status_code == 200
    limited = client.get("/users/@me")
    assert limited.status_code == 429
    body = api.check(limited, server.api_url)
    assert body["global"] is False and body["retry_after"] > 0

    for status in (429, 500, 502, 503, 504):
        assert (
            client.control(
                "POST",
                "/faults",
                {"status": status, "count": 1, "path": "/gateway/bot", "retry_after": 0.5},
            ).status_code
            == 200
        )
        failed = client.get("/gateway/bot")
        assert failed.status_code == status
        assert set(api.check(failed, server.api_url)) >= {"message", "code"}
    # Discord's document describes 429 (RatelimitedResponse) but no 5xx bodies at all; the
    # sandbox still answers them in Discord's {"message", "code"} shape.
    assert api.undocumented == {("GET", "/gateway/bot", s) for s in (500, 502, 503, 504)}
    assert api.check(client.get("/gateway/bot"), server.api_url)["url"].startswith(
        "ws://"
    )  # faults are spent
