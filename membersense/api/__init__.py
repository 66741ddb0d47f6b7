"""The HTTP API: one blueprint per resource."""

from __future__ import annotations

from flask import Flask

from membersense.api import (
    auth,
    channels,
    dashboard,
    docs,
    events,
    health,
    members,
    messages,
    metrics,
    webhooks,
)
from membersense.config import Settings

__all__ = ["register_blueprints"]


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint on *app* (``/metrics`` only when the settings serve it)."""
    for module in (health, auth, members, channels, messages, events, webhooks, docs, dashboard):
        app.register_blueprint(module.bp)
    settings: Settings = app.config["SETTINGS"]
    metrics.init_app(app, settings)
