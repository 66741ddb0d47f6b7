"""The HTTP API: one blueprint per resource."""

from __future__ import annotations

from flask import Flask

from membersense.api import (
    auth,
    channels,
    dashboard,
    events,
    health,
    members,
    messages,
    webhooks,
)

__all__ = ["register_blueprints"]


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint on *app*."""
    for module in (health, auth, members, channels, messages, events, webhooks, dashboard):
        app.register_blueprint(module.bp)
