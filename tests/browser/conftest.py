"""Browser tests: Debian's Chromium, driven by Playwright, against gunicorn + the sandbox.

Chromium comes from ``scripts/install-system-packages`` (``make test`` runs it); Playwright
never downloads a browser of its own here. Screenshots go to ``test-artifacts/`` (not
committed): the README's picture is one of them.

The servers are module-scoped: a module shapes them by overriding ``sandbox_config`` (the
sandbox's world) and ``app_env`` (MemberSense's settings).
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
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "browser-test-token"
#: Window sizes the pages are tried at.
VIEWPORTS = {"desktop": (1366, 768), "phone": (390, 844), "narrow": (360, 740)}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one module: Playwright's sync API keeps an event loop running in this
    thread while it is open, and later tests' ``asyncio.run()`` must find none."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/install-system-packages as root "
            "(make test does) to install Debian's chromium",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser profile at one of :data:`VIEWPORTS` (``indirect`` parameter; desktop
    by default)."""
    width, height = VIEWPORTS[getattr(request, "param", "desktop")]
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(20_000)
    yield context
    context.close()


@pytest.fixture(scope="module")
def sandbox_config() -> SandboxConfig:
    # Logins after a logout ask for the member list again: a short cooldown between two such
    # requests (Discord: 30 s) keeps them from waiting.
    return SandboxConfig(
        port=0,
        members=400,
        channels=6,
        messages=120,
        tokens=(TOKEN,),
        member_request_cooldown_s=0.5,
    )


@pytest.fixture(scope="module")
def sandbox(sandbox_config: SandboxConfig) -> Iterator[SandboxServer]:
    server = SandboxServer(sandbox_config).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_env() -> dict[str, str]:
    """MemberSense settings of the module's server, on top of the sandbox's URLs."""
    return {}


@pytest.fixture(scope="module")
def app_url(
    sandbox: SandboxServer, app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("browser") / "gunicorn.log"
    server = GunicornServer(
        {
            "DISCORD_API_BASE": sandbox.api_url,
            "DISCORD_GATEWAY_URL": sandbox.gateway_url,
            "DISCORD_CDN_BASE": sandbox.cdn_url,
            "RATE_LIMIT_MAX_REQUESTS": "100000",
            **app_env,
        },
        log_path=log,
    ).start()
    yield server.base_url
    server.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
