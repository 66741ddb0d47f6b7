"""Browser tests: Debian's Chromium, driven by Playwright, against gunicorn + the sandbox.

Chromium comes from ``scripts/install-system-packages`` (``make test`` runs it); Playwright
never downloads a browser of its own here. Screenshots go to ``test-artifacts/`` (not
committed): the README's picture is one of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer
from tests.servers import ROOT, GunicornServer

CHROMIUM = Path(os.environ.get("MEMBERSENSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "browser-test-token"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one module: Playwright's sync API keeps an event loop running in this
    thread while it is open, and later tests' ``asyncio.run()`` must find none."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-packages as root "
                    "(make test does) to install Debian's chromium", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    # Logins after a logout ask for the member list again: a short cooldown between two such
    # requests (Discord: 30 s) keeps them from waiting.
    server = SandboxServer(SandboxConfig(port=0, members=400, channels=6, messages=120,
                                         tokens=(TOKEN,), member_request_cooldown_s=0.5)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_url(sandbox: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("browser") / "gunicorn.log"
    server = GunicornServer({
        "DISCORD_API_BASE": sandbox.api_url, "DISCORD_GATEWAY_URL": sandbox.gateway_url,
        "DISCORD_CDN_BASE": sandbox.cdn_url, "RATE_LIMIT_MAX_REQUESTS": "100000",
    }, log_path=log).start()
    yield server.base_url
    server.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
