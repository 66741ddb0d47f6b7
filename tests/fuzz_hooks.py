"""schemathesis hooks and checks for the fuzz test (tests/integration/test_fuzz.py).

Loaded by the ``schemathesis`` process (``hooks`` in tests/schemathesis.toml),
which gets the live server's address, the shared session and the bot token
through the environment.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
import schemathesis
from hypothesis import strategies as st

from membersense.webhooks.addresses import forbidden

BASE_URL = os.environ["FUZZ_BASE_URL"]
#: The session every authenticated operation uses: no generated request may end it.
SHARED_SESSION = os.environ["FUZZ_SESSION"]
#: A token the sandbox accepts, so some generated logins succeed and links can follow them.
BOT_TOKEN = os.environ["FUZZ_BOT_TOKEN"]
#: A text channel the bot may send in, so some generated messages are posted (and links
#: go on to edit and delete them).
CHANNEL = os.environ["FUZZ_CHANNEL"]
#: The longest a fuzzed long-poll may wait, in seconds: each waiting one holds a server thread.
MAX_POLL_WAIT_S = 1
#: Webhook URLs the server must refuse (WEBHOOK_ALLOW_PRIVATE is 0): itself, the cloud
#: metadata address, the private network, IPv6 loopback, IPv4 inside IPv6, a name of loopback.
PRIVATE_URLS = (
    f"{BASE_URL}/api/members",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1:8080/hook",
    "http://[::1]:9/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://localhost/hook",
)


def _positive(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and str(meta.generation.mode.value) == "positive"


@schemathesis.hook.apply_to(path="/api/auth/login")
def flatmap_case(context: Any, case: Any) -> Any:
    """Now and then a valid generated login gets the real token, so links can go on from it.

    Only cases generated as valid: a negative case must stay invalid (or
    schemathesis would rightly complain that invalid data was accepted).
    """
    if not _positive(case):
        return st.just(case)

    def choose(real: bool) -> Any:
        if real:
            case.body = {"token": BOT_TOKEN}
        return case

    return st.sampled_from([False, False, True]).map(choose)


@schemathesis.hook
def flatmap_case(context: Any, case: Any) -> Any:  # noqa: F811 (one hook per operation)
    """Now and then a valid generated case goes without ``guildId``, so it reads the login's
    guild: a generated id is nearly always no guild of the bot's (404)."""
    query = case.query
    if not _positive(case) or not isinstance(query, dict) or "guildId" not in query:
        return st.just(case)

    def choose(drop: bool) -> Any:
        if drop:
            case.query = {name: value for name, value in query.items() if name != "guildId"}
        return case

    return st.sampled_from([False, True]).map(choose)


@schemathesis.hook.apply_to(path="/api/messages", method="POST")
def flatmap_case(context: Any, case: Any) -> Any:  # noqa: F811 (one hook per operation)
    """Now and then a valid generated message goes to a channel that exists, so it is posted."""
    if not _positive(case) or not isinstance(case.body, dict):
        return st.just(case)

    def choose(real: bool) -> Any:
        if real:
            case.body = {**case.body, "channelId": CHANNEL}
        return case

    return st.sampled_from([False, True]).map(choose)


@schemathesis.hook.apply_to(path="/api/webhooks", method="POST")
def flatmap_case(context: Any, case: Any) -> Any:  # noqa: F811 (one hook per operation)
    """Now and then a valid generated webhook aims at a private address: it must be refused."""
    if not _positive(case) or not isinstance(case.body, dict):
        return st.just(case)

    def choose(url: str | None) -> Any:
        if url is not None:
            case.body = {**case.body, "url": url}
        return case

    return st.sampled_from([None, *PRIVATE_URLS]).map(choose)


#: What gunicorn refuses in a header value, with an HTML 400, before the app sees the request.
_REFUSED_BY_GUNICORN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@schemathesis.hook
def filter_headers(context: Any, headers: Any) -> bool:
    """Leave out header values gunicorn itself refuses.

    Its answer is an HTML page, not the app's (issue 8: JSON error pages from
    the worker). Drop this filter, and document that 400 for every operation,
    once the worker answers them in JSON.
    """
    return not any(_REFUSED_BY_GUNICORN.search(str(value)) for value in (headers or {}).values())


def _clamp_poll_wait(case: Any) -> None:
    # A valid wait stays valid (0 to MAX_POLL_WAIT_S); an invalid one is left for the server
    # to refuse.
    query = case.query or {}
    wait = query.get("wait")
    if (
        isinstance(wait, (int, str))
        and not isinstance(wait, bool)
        and re.fullmatch(r"[0-9]{1,2}", str(wait))
        and int(wait) <= 25
    ):
        case.query = {**query, "wait": min(int(wait), MAX_POLL_WAIT_S)}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Long-polls wait a second at most; logout never ends the shared session: such a call
    logs out a fresh one instead."""
    if case.operation.path == "/api/events/poll":
        _clamp_poll_wait(case)
        return
    if case.operation.path != "/api/auth/logout":
        return
    headers = case.headers or {}
    sent = str(headers.get("Authorization", "")).strip()
    if SHARED_SESSION in sent:
        response = requests.post(
            f"{BASE_URL}/api/auth/login", json={"token": BOT_TOKEN}, timeout=30
        )
        response.raise_for_status()
        case.headers = {**headers, "Authorization": response.json()["sessionId"]}


@schemathesis.check
def retry_after_on_every_503(ctx: Any, response: Any, case: Any) -> None:
    """Every 503 says when to try again."""
    if response.status_code == 503:
        value = response.headers.get("Retry-After")
        value = value[0] if isinstance(value, list) else value
        if not value or not str(value).isdigit() or int(value) < 1:
            raise AssertionError(f"503 without a usable Retry-After: {value!r}")


@schemathesis.check
def errors_are_json(ctx: Any, response: Any, case: Any) -> None:
    """Every error is a JSON object with an "error" string, whatever the request."""
    if response.status_code >= 400 and case.method.upper() != "HEAD":
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"a {response.status_code} that is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            raise AssertionError(f"a {response.status_code} without an error message: {body!r}")


def _private_host(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return forbidden(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False  # does not resolve: the server cannot have reached it either
    return any(forbidden(str(address[4][0])) for address in found)


@schemathesis.check
def private_webhooks_refused(ctx: Any, response: Any, case: Any) -> None:
    """No webhook is ever registered for a private, loopback or reserved address."""
    if (
        case.operation.path == "/api/webhooks"
        and case.method.upper() == "POST"
        and response.status_code == 201
    ):
        url = json.loads(response.content)["url"]
        if _private_host(url):
            raise AssertionError(f"a webhook was registered for a private address: {url!r}")
