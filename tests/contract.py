"""The API contract, checked on every response a test sees (a pytest plugin).

Every response of a Flask test client (any app's) and of tests/integration's
``Api`` client is checked against the OpenAPI document the app serves
(:func:`membersense.openapi.build_document`): its status must be documented
for the operation, its required headers present and well formed, its body of
a documented media type and valid against the documented schema. A request
that matches no documented operation must get an error in the shared JSON
error shape (404 for an unknown path, 405 for a known path's other methods).
So the whole test suite exercises the contract, and a change to the API that
the document does not follow fails the tests that touch it.

What is not an HTTP response is checked where tests read it: the event stream's
frames (:meth:`Contract.check_frame`, through :class:`tests.sse.FrameReader`)
and webhook deliveries (:meth:`Contract.check_delivery`), against the
document's ``Event`` schema and its ``webhooks``.

Loaded from tests/conftest.py (``pytest_plugins``).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from membersense.openapi import build_document

__all__ = ["Contract", "ContractClient", "ContractViolation", "served_contract", "watch_session"]

_BASE = "urn:membersense:openapi"
_METHODS = ("get", "put", "post", "delete", "patch")


class ContractViolation(AssertionError):
    """A response the OpenAPI document does not allow."""


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


@dataclass(frozen=True)
class _Path:
    template: str
    pattern: re.Pattern[str]
    item: Mapping[str, Any]


class Contract:
    """One OpenAPI document, ready to judge responses."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_BASE, resource)
        self._fast_registry = jsonschema_rs.Registry([(_BASE, dict(document))])
        self._fast: dict[str, Any] = {}  # compiled validators by schema pointer
        self._paths = [
            _Path(
                template,
                re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"),
                item,
            )
            for template, item in document["paths"].items()
        ]
        # Exact paths win over templates (/api/docs over /api/docs/{filename}).
        self._paths.sort(key=lambda p: "{" in p.template)

    def _validate(self, instance: Any, *pointer: str) -> None:
        # jsonschema-rs judges (a member list of 10 000 in milliseconds, where jsonschema
        # takes seconds and would slow every test that reads one, timing-bound ones too);
        # jsonschema words what is wrong, as its messages are the ones tests look for.
        schema = {"$ref": f"{_BASE}#/{quote(_pointer(*pointer), safe='/~')}"}
        fast = self._fast.get(schema["$ref"])
        if fast is None:
            fast = self._fast[schema["$ref"]] = jsonschema_rs.validator_for(
                schema, registry=self._fast_registry, validate_formats=True
            )
        if fast.is_valid(instance):
            return
        validator = Draft202012Validator(
            schema, registry=self._registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            error = errors[0]
            where = "/".join(str(p) for p in error.absolute_path)
            raise ContractViolation(f"body at /{where}: {error.message}")
        fast_error = next(fast.iter_errors(instance))  # a format only jsonschema-rs checks
        where = "/".join(str(p) for p in fast_error.instance_path)
        raise ContractViolation(f"body at /{where}: {fast_error.message}")

    def _resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def operation(self, method: str, path: str) -> tuple[str, str] | None:
        """The documented (path template, method) answering *method* *path*, if any."""
        method = "get" if method.lower() == "head" else method.lower()
        for candidate in self._paths:
            if candidate.pattern.match(path) and method in candidate.item:
                return candidate.template, method
        return None

    def check(
        self, method: str, path: str, status: int, headers: Mapping[str, str], body: bytes | None
    ) -> None:
        """Raise :class:`ContractViolation` unless the document allows this response.

        *body* None: not read (a stream); status and headers are still checked.
        """
        if method.upper() == "OPTIONS":
            return  # CORS preflights (flask-cors): not part of the document
        where = f"{method} {path} -> {status}"
        try:
            found = self.operation(method, path)
            if found is None:
                self._check_undocumented(method, path, status, headers, body)
                return
            template, op_method = found
            self._check_operation(
                template,
                op_method,
                status,
                headers,
                body or b"",
                head=method.upper() == "HEAD" or body is None,
            )
        except ContractViolation as exc:
            raise ContractViolation(f"{where}: {exc}") from None

    def _check_operation(
        self,
        template: str,
        method: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        *,
        head: bool,
    ) -> None:
        responses = self.document["paths"][template][method]["responses"]
        key = str(status) if str(status) in responses else "default"
        if key not in responses:
            raise ContractViolation(
                f"status {status} is not documented (documented: {', '.join(responses)})"
            )
        response = self._resolve(responses[key])
        for name, header in response.get("headers", {}).items():
            header = self._resolve(header)
            value = headers.get(name)
            if value is None:
                if header.get("required"):
                    raise ContractViolation(f"required header {name} is missing")
                continue
            schema = header.get("schema", {})
            if not Draft202012Validator(schema).is_valid(value):
                raise ContractViolation(f"header {name}: {value!r} does not match {schema}")
        content = response.get("content")
        if not content:
            if body:
                raise ContractViolation("a body where the document has none")
            return
        if not body and not head:
            raise ContractViolation("no body where the document has one")
        mimetype = headers.get("Content-Type", "").split(";")[0].strip().lower()
        media = content.get(mimetype) or content.get("*/*")
        if media is None:
            raise ContractViolation(f"media type {mimetype!r} is not one of {', '.join(content)}")
        if mimetype == "application/json" and not head:
            pointer = ("paths", template, method, "responses", key, "content", mimetype, "schema")
            self._validate(_json(body, headers), *pointer)

    def _check_undocumented(
        self, method: str, path: str, status: int, headers: Mapping[str, str], body: bytes | None
    ) -> None:
        # Only errors, all in the one JSON error shape (routes that tests add end up here too).
        if status < 400:
            raise ContractViolation(
                "a path and method the document does not list must be answered with an error"
            )
        if status in (404, 501) and any(p.pattern.match(path) for p in self._paths):
            raise ContractViolation("a listed path's other methods must be answered 405")
        if "X-Request-ID" not in headers:
            raise ContractViolation("required header X-Request-ID is missing")
        if status in (429, 503) and "Retry-After" not in headers:
            raise ContractViolation("Retry-After is missing")
        if status == 405 and "Allow" not in headers:
            raise ContractViolation("Allow is missing from a 405")
        if not headers.get("Content-Type", "").startswith("application/json"):
            raise ContractViolation("errors must be JSON")
        if method.upper() == "HEAD" or body is None:
            return
        if not headers.get("Content-Type", "").startswith("application/json"):
            raise ContractViolation("errors must be JSON")
        schema = "RetryableError" if status in (429, 503) else "Error"
        self._validate(_json(body, headers), "components", "schemas", schema)

    # -- what is not an HTTP response -------------------------------------------------------

    def check_frame(self, fields: Mapping[str, str]) -> None:
        """Raise :class:`ContractViolation` unless an event stream's frame is one the
        document describes: an event of the ``Event`` schema (``event`` its type, ``data``
        its data), ``reset`` (``data: {}``) or ``end``."""
        event = fields.get("event")
        if event is None:
            return  # comments, a retry: hint
        try:
            data = json.loads(fields.get("data", ""))
        except ValueError:
            raise ContractViolation(f"frame {event}: data is not JSON") from None
        if event == "end":
            return
        event_id = fields.get("id")
        if event_id is None:
            raise ContractViolation(f"frame {event}: no id")
        self._validate(event_id, "components", "schemas", "EventId")
        if event == "reset":
            if data != {}:
                raise ContractViolation(f"a reset frame's data is {data!r}, not {{}}")
            return
        for index, variant in enumerate(self.document["components"]["schemas"]["Event"]["oneOf"]):
            if event in variant["properties"]["type"]["enum"]:
                try:
                    self._validate(
                        data,
                        "components",
                        "schemas",
                        "Event",
                        "oneOf",
                        str(index),
                        "properties",
                        "data",
                    )
                except ContractViolation as exc:
                    raise ContractViolation(f"frame {event}: {exc}") from None
                return
        raise ContractViolation(f"frame of an undocumented event type {event!r}")

    def check_delivery(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise :class:`ContractViolation` unless a webhook delivery (what the receiver got)
        is as the document's ``webhooks`` describe it."""
        operation = self.document["webhooks"]["event"]["post"]
        for parameter in operation["parameters"]:
            value = headers.get(parameter["name"])
            if value is None:
                if parameter["required"]:
                    raise ContractViolation(f"delivery: header {parameter['name']} is missing")
                continue
            if not Draft202012Validator(parameter["schema"]).is_valid(value):
                raise ContractViolation(f"delivery: header {parameter['name']}: {value!r}")
        if headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise ContractViolation("delivery: not JSON")
        try:
            self._validate(
                _json(body, headers),
                "webhooks",
                "event",
                "post",
                "requestBody",
                "content",
                "application/json",
                "schema",
            )
        except ContractViolation as exc:
            raise ContractViolation(f"delivery: {exc}") from None


def _json(body: bytes, headers: Mapping[str, str]) -> Any:
    if headers.get("Content-Encoding") == "gzip" and body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    try:
        return json.loads(body)
    except ValueError:
        raise ContractViolation("the body is not JSON") from None


# -- the Flask test client -------------------------------------------------------------

_contracts: dict[int, tuple[Any, Contract]] = {}


def contract_of(app: Flask) -> Contract:
    """The contract of *app* as configured (built once per settings)."""
    settings = app.config["SETTINGS"]
    cached = _contracts.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = (settings, Contract(build_document(settings)))
        _contracts[id(settings)] = cached
    return cached[1]


class ContractClient(FlaskClient):
    """A Flask test client that checks every response against the app's document."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        request = response.request
        # An event stream may never end: its body is left to the test.
        body = None if response.mimetype == "text/event-stream" else response.get_data()
        contract_of(self.application).check(
            request.method, request.path, response.status_code, response.headers, body
        )
        return response


# -- requests sessions (the integration tests' Api client) ------------------------------

_served: dict[str, Contract] = {}


def served_contract(base_url: str) -> Contract:
    """The contract of the document the server at *base_url* serves (fetched once)."""
    contract = _served.get(base_url)
    if contract is None:
        document = requests.get(f"{base_url}/api/openapi.json", timeout=10)
        document.raise_for_status()
        contract = _served[base_url] = Contract(document.json())
    return contract


def watch_session(session: requests.Session, base_url: str) -> None:
    """Check every response *session* receives from *base_url* against the document it serves."""
    contract = served_contract(base_url)

    def check(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.url.startswith(base_url):
            request = response.request
            path = requests.utils.urlparse(response.url).path  # type: ignore[attr-defined]
            # Hooks run before requests reads the body; one asked for as a stream
            # (an event stream, say) is left unread for the test.
            body = None if kwargs.get("stream") else response.content
            contract.check(
                request.method or "GET", path, response.status_code, response.headers, body
            )
        return response

    session.hooks["response"].append(check)


@pytest.fixture(autouse=True)
def _contract_checked_test_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every app's ``test_client()`` checks its responses against the contract."""
    monkeypatch.setattr(Flask, "test_client_class", ContractClient)
    yield
