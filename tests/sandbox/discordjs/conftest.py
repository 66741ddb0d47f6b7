"""Registers the ``node`` marker of the discord.js check (deselect with ``-m "not node"``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker here too, so ``--strict-markers`` accepts it wherever it is registered."""
    config.addinivalue_line("markers", "node: needs node and npm (installs discord.js 14 with npm ci)")
