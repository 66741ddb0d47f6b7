"""Fuzzing: schemathesis against MemberSense under gunicorn, with the sandbox behind it.

Requests are generated from the served OpenAPI document, for every operation
(positive and negative data, coverage of edge values, and stateful sequences
that follow the document's links: login → sessionId → members, channels →
channelId → messages, login → logout). Checks: no 500 ever, every status,
header, media type and body conforming to the document, every 503 with
Retry-After, every error JSON, bad input rejected, authentication enforced.

schemathesis runs in a process of its own (its warnings are not this suite's
business), bounded by ``FUZZ_MAX_EXAMPLES`` per operation and ``FUZZ_MAX_TIME``
seconds; ``FUZZ_SEED`` picks the examples (a fixed default, so a failure
reproduces). Deselect with ``-m "not fuzz"``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from membersense.sandbox.server import SandboxServer
from tests.integration.conftest import MemberSense, start_sandbox
from tests.integration.support import MAIN_TOKEN
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
        membersense_factory: Callable[..., MemberSense], module_tmp: Path) -> None:
    server = membersense_factory(**FUZZ_ENV)
    api = server.api
    assert api is not None
    shared = api.login(MAIN_TOKEN)
    channels = api.get("/api/channels", shared).json()
    channel = next(c["id"] for c in channels if c["name"] not in ("staff-only", "news"))
    base_url = server.server.base_url
    report = module_tmp / "schemathesis"
    command = [
        str(VENV_BIN / "schemathesis"), "--config-file", str(ROOT / "tests/schemathesis.toml"),
        "--no-color", "run", f"{base_url}/api/openapi.json", "--url", base_url,
        "--seed", os.environ.get("FUZZ_SEED", "8"),
        "--max-examples", os.environ.get("FUZZ_MAX_EXAMPLES", "25"),
        "--max-time", os.environ.get("FUZZ_MAX_TIME", "120"),
        "--checks", "all", "--exclude-checks",
        "use_after_free,ensure_resource_availability,object_level_authorization",
        "--report", "junit", "--report-dir", str(report),
    ]
    for operation in SKIPPED_OPERATIONS:
        method, path = operation.split(" ", 1)
        command += ["--exclude-by", f"method == '{method}' and path == '{path}'"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FUZZ_BASE_URL": base_url,
           "FUZZ_SESSION": shared, "FUZZ_BOT_TOKEN": MAIN_TOKEN, "FUZZ_CHANNEL": channel,
           "FUZZ_METRICS_TOKEN": METRICS_TOKEN}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    output = result.stdout + result.stderr
    (module_tmp / "schemathesis.log").write_text(output)
    assert result.returncode == 0, output[-20000:]
    assert "No issues found" in output or " passed" in output, output[-5000:]
    # The shared session lived through it all.
    assert api.get("/api/members", shared, limit=1).status_code == 200
    api.logout(shared)
    assert "unhandled" not in server.server.log()  # no exception reached the error handler
