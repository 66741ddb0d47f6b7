"""Discord-shaped HTTP answers: JSON with exactly ``Content-Type: application/json``, and API errors.

discord.py compares the Content-Type header verbatim (``; charset=utf-8`` makes it treat the
body as text), so every JSON answer of the sandbox is built here, never with
``web.json_response``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

JSON_CONTENT_TYPE = "application/json"


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON answer with Discord's exact Content-Type."""
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    all_headers = {"Content-Type": JSON_CONTENT_TYPE}
    if headers:
        all_headers.update(headers)
    return web.Response(body=data, status=status, headers=all_headers)


class ApiError(Exception):
    """An error answer in Discord's shape ``{"message", "code"[, "errors"]}``."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The JSON body Discord sends for this error."""
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        """This error as an HTTP answer."""
        return json_response(self.body(), self.status, headers)


#: ``code`` of each entry in ``errors.…._errors``.  Discord's live API sends a symbolic string there
#: ("BASE_TYPE_MAX_LENGTH"), but its OpenAPI document types it as an integer (the ``Error``
#: schema), and the sandbox's contract is to validate against that document; so entries carry
#: Invalid Form Body's own code.  Clients read the ``message`` (discord.py) or print the code
#: opaquely (discord.js), so either form works for them.
FIELD_ERROR_CODE = 50035


def field_error(path: str, code: str, message: str) -> dict[str, Any]:
    """Discord's nested ``errors`` object for one field; ``path`` is dotted ("embeds.0.title", "" for the root).

    ``code`` is Discord's symbolic error code, kept at call sites for the reader; see
    :data:`FIELD_ERROR_CODE` for what the answer carries.
    """
    leaf: dict[str, Any] = {"_errors": [{"code": FIELD_ERROR_CODE, "message": message}]}
    for part in reversed([p for p in path.split(".") if p]):
        leaf = {part: leaf}
    return leaf


class InvalidFormBody(ApiError):
    """400 / 50035 ``Invalid Form Body`` with the nested field errors."""

    def __init__(self, path: str, code: str, message: str) -> None:
        super().__init__(400, 50035, "Invalid Form Body", field_error(path, code, message))


def _error(status: int, code: int, message: str) -> ApiError:
    return ApiError(status, code, message)


# The fixed errors the sandbox answers with (Discord's JSON error codes).
def unauthorized() -> ApiError:
    """401 for a missing, unknown or revoked token."""
    return _error(401, 0, "401: Unauthorized")


def not_found() -> ApiError:
    """404 for an unknown route."""
    return _error(404, 0, "404: Not Found")


def method_not_allowed() -> ApiError:
    """405 for a known route asked with the wrong method."""
    return _error(405, 0, "405: Method Not Allowed")


def unknown_channel() -> ApiError:
    """404 / 10003."""
    return _error(404, 10003, "Unknown Channel")


def unknown_guild() -> ApiError:
    """404 / 10004."""
    return _error(404, 10004, "Unknown Guild")


def unknown_member() -> ApiError:
    """404 / 10007."""
    return _error(404, 10007, "Unknown Member")


def unknown_message() -> ApiError:
    """404 / 10008."""
    return _error(404, 10008, "Unknown Message")


def unknown_user() -> ApiError:
    """404 / 10013."""
    return _error(404, 10013, "Unknown User")


def missing_access() -> ApiError:
    """403 / 50001: the bot cannot see the guild or channel."""
    return _error(403, 50001, "Missing Access")


def missing_permissions() -> ApiError:
    """403 / 50013: the bot sees it but lacks a permission."""
    return _error(403, 50013, "Missing Permissions")


def cannot_edit_others() -> ApiError:
    """403 / 50005."""
    return _error(403, 50005, "Cannot edit a message authored by another user")


def empty_message() -> ApiError:
    """400 / 50006."""
    return _error(400, 50006, "Cannot send an empty message")


def non_text_channel() -> ApiError:
    """400 / 50008."""
    return _error(400, 50008, "Cannot send messages in a non-text channel")


def invalid_json() -> ApiError:
    """400 / 50109."""
    return _error(400, 50109, "The request body contains invalid JSON.")


def server_error(status: int) -> ApiError:
    """A 5xx as Discord's edge answers it."""
    reason = {
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }.get(status, "Server Error")
    return _error(status, 0, f"{status}: {reason}")
