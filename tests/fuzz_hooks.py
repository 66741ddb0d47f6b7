"""schemathesis hooks and checks for the fuzz test (tests/integration/test_fuzz.py).

Loaded by the ``schemathesis`` process (``hooks`` in tests/schemathesis.toml),
which gets the live server's address, the shared session and the bot token
through the environment.
"""

from __future__ import annotations

import os
import re
from typing import Any

import requests
import schemathesis
from hypothesis import strategies as st

BASE_URL = os.environ["FUZZ_BASE_URL"]
#: The session every authenticated operation uses: no generated request may end it.
SHARED_SESSION = os.environ["FUZZ_SESSION"]
#: A token the sandbox accepts, so some generated logins succeed and links can follow them.
BOT_TOKEN = os.environ["FUZZ_BOT_TOKEN"]


@schemathesis.hook.apply_to(path="/api/auth/login")
def flatmap_case(context: Any, case: Any) -> Any:
    """Now and then a valid generated login gets the real token, so links can go on from it.

    Only cases generated as valid: a negative case must stay invalid (or
    schemathesis would rightly complain that invalid data was accepted).
    """
    meta = getattr(case, "meta", None)
    if meta is None or str(meta.generation.mode.value) != "positive":
        return st.just(case)

    def choose(real: bool) -> Any:
        if real:
            case.body = {"token": BOT_TOKEN}
        return case

    return st.sampled_from([False, False, True]).map(choose)


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


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Logout never ends the shared session: such a call logs out a fresh one instead."""
    if case.operation.path != "/api/auth/logout":
        return
    headers = case.headers or {}
    sent = str(headers.get("Authorization", "")).strip()
    if SHARED_SESSION in sent:
        response = requests.post(f"{BASE_URL}/api/auth/login", json={"token": BOT_TOKEN},
                                 timeout=30)
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
