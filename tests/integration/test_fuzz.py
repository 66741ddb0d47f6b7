"""Fuzzing: schemathesis against MemberSense under gunicorn, with the sandbox behind it.

Requests are generated from the served OpenAPI document, for every operation
but the event stream (positive and negative data, coverage of edge values, and
stateful sequences that follow the document's links: login → sessionId →
members, channels → channelId → messages, a sent message → edit and delete,
a long-poll → its cursor, a webhook → its deletion, login → logout). Checks:
no 500 ever, every status, header, media type and body conforming to the
document, every 503 with Retry-After, every error JSON, bad input rejected,
authentication enforced, and no webhook ever registered for a private address
(WEBHOOK_ALLOW_PRIVATE stays 0; the hooks in tests/fuzz_hooks.py aim some
generated webhooks at such addresses, and keep long-polls to a second).

schemathesis runs in a process of its own (its warnings are not this suite's
business), bounded by ``FUZZ_MAX_EXAMPLES`` per operation and ``FUZZ_MAX_TIME``
seconds; ``FUZZ_SEED`` picks the examples (a fixed default, so a failure
reproduces). Its JUnit and HAR reports land in the test's temporary directory.
Deselect with ``-m "not fuzz"``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest

from membersense.sandbox.server import SandboxServer
from membersense.webhooks.addresses import forbidden
from tests.integration.conftest import MemberSense, start_sandbox
from tests.integration.support import MAIN_TOKEN, log_records
from tests.servers import ROOT, VENV_BIN

pytestmark = pytest.mark.fuzz

METRICS_TOKEN = "fuzz-metrics-token-0123456789"

#: The fuzzed server's settings: limits that random input cannot exhaust, so answers are
#: about the input and not about a spent budget.
FUZZ_ENV = {
    "RATE_LIMIT_MAX_REQUESTS": "100000000",
    # Random tokens are refused by Discord (the sandbox): count them, never hold back.
    "DISCORD_INVALID_REQUEST_LIMIT": "100000000",
    # Generated logins with the real token open sessions of their own.
    "MAX_CONCURRENT_USERS": "100000",
    "METRICS_TOKEN": METRICS_TOKEN,
    # Outgoing webhooks must never reach private addresses, fuzzed or not: registering one
    # is a documented 400 (the hooks aim some generated webhooks at such addresses).
    "WEBHOOK_ALLOW_PRIVATE": "0",
    # Generated webhooks all belong to the shared session.
    "MAX_WEBHOOKS_PER_SESSION": "100000",
}

#: Operations not fuzzed, by "METHOD /path": the event stream holds a server thread for
#: EVENT_STREAM_MAX_SECONDS per example. (The long-poll is fuzzed, with ``wait`` cut to a
#: second by the hooks.)
SKIPPED_OPERATIONS: tuple[str, ...] = ("GET /api/events",)


@pytest.fixture(scope="module")
def sandbox(module_tmp: Path) -> Iterator[SandboxServer]:
    """A smaller world than the other modules' (the fuzzer reads member lists often)."""
    server = start_sandbox(module_tmp, main_members=200)
    yield server
    server.stop()


def test_the_api_survives_fuzzing_and_keeps_its_contract(
    membersense_factory: Callable[..., MemberSense], module_tmp: Path
) -> None:
    server = membersense_factory(**FUZZ_ENV)
    api = server.api
    assert api is not None
    shared = api.login(MAIN_TOKEN)
    channels = api.get("/api/channels", shared).json()
    channel = next(c["id"] for c in channels if c["name"] not in ("staff-only", "news"))
    base_url = server.server.base_url
    report = module_tmp / "schemathesis"
    command = [
        str(VENV_BIN / "schemathesis"),
        "--config-file",
        str(ROOT / "tests/schemathesis.toml"),
        "--no-color",
        "run",
        f"{base_url}/api/openapi.json",
        "--url",
        base_url,
        "--seed",
        os.environ.get("FUZZ_SEED", "8"),
        "--max-examples",
        os.environ.get("FUZZ_MAX_EXAMPLES", "25"),
        "--max-time",
        os.environ.get("FUZZ_MAX_TIME", "120"),
        "--checks",
        "all",
        "--exclude-checks",
        "use_after_free,ensure_resource_availability,object_level_authorization",
        "--report",
        "junit,har",
        "--report-dir",
        str(report),
    ]
    for operation in SKIPPED_OPERATIONS:
        command += ["--exclude-name", operation]  # schemathesis names them "METHOD /path"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FUZZ_BASE_URL": base_url,
        "FUZZ_SESSION": shared,
        "FUZZ_BOT_TOKEN": MAIN_TOKEN,
        "FUZZ_CHANNEL": channel,
        "FUZZ_METRICS_TOKEN": METRICS_TOKEN,
    }
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    (module_tmp / "schemathesis.log").write_text(output)
    assert result.returncode == 0, output[-20000:]
    assert "No issues found" in output or " passed" in output, output[-5000:]
    # Every documented operation was fuzzed, but the skipped ones (and the document itself,
    # which schemathesis leaves out), and no request reached a skipped one.
    (junit,) = report.glob("junit-*.xml")
    tested = {case.get("name") for case in ElementTree.parse(junit).iter("testcase")}
    document = api.http.get(f"{base_url}/api/openapi.json", timeout=10).json()
    documented = {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }
    assert documented - tested == {*SKIPPED_OPERATIONS, "GET /api/openapi.json"}, tested
    log = server.server.log()
    access = [
        record["message"]
        for record in log_records(log)
        if record.get("logger") == "membersense.access"
    ]
    assert len(access) > 100  # the check below reads the access log it means to
    for operation in SKIPPED_OPERATIONS:
        assert [
            line for line in access if re.fullmatch(rf"{re.escape(operation)} \d{{3}}", line)
        ] == []
    # The shared session lived through it all, with no webhook for a private address.
    assert api.get("/api/members", shared, limit=1).status_code == 200
    webhooks = api.get("/api/webhooks", shared).json()
    assert not [hook["url"] for hook in webhooks if private(hook["url"])]
    api.logout(shared)
    assert "unhandled" not in log  # no exception reached the error handler


def private(url: str) -> bool:
    """Whether *url*'s host is, or resolves to, an address webhooks may not reach."""
    host = urlsplit(url).hostname or ""
    try:
        return forbidden(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return any(forbidden(str(found[4][0])) for found in socket.getaddrinfo(host, None))
    except (OSError, UnicodeError):
        return False
