"""``/api/webhooks``: the session's outgoing webhooks.

- ``POST /api/webhooks`` ``{"url", "events": [...]}``: 201 with the
  subscription and its signing ``secret``, shown this once.
- ``GET /api/webhooks``: the session's subscriptions and how their deliveries go.
- ``DELETE /api/webhooks/<id>``: 204.

Subscriptions follow the session's guild (or ``guildId``) and end with the
session. See :mod:`membersense.webhooks` for delivery and the URL rules.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from membersense.api.events import session_topic
from membersense.api.params import json_object
from membersense.errors import NotFound
from membersense.extensions import sessions
from membersense.response_policy import CREDENTIAL_CACHE_CONTROL
from membersense.runtime import runtime_of
from membersense.webhooks.service import Webhooks

bp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")


def _webhooks() -> Webhooks:
    return runtime_of(current_app).webhooks


@bp.post("")
def register() -> Any:
    """Subscribe ``url`` to ``events`` of the session's guild: 201 with the secret."""
    session = sessions.authenticate()
    payload = json_object()
    guild_id, topic = session_topic(session)
    subscription = _webhooks().register(
        session, guild_id, topic, payload.get("url"), payload.get("events")
    )
    # The signing secret is shown this once: kept by no cache.
    return (
        {**subscription.to_json(), "secret": subscription.secret},
        201,
        {"Cache-Control": CREDENTIAL_CACHE_CONTROL},
    )


@bp.get("")
def list_webhooks() -> Any:
    """The session's subscriptions, oldest first (secrets are never shown again)."""
    session = sessions.authenticate()
    return jsonify([s.to_json() for s in _webhooks().of_session(session.id)])


@bp.delete("/<webhook_id>")
def delete(webhook_id: str) -> Any:
    """Delete one of the session's subscriptions: 204; 404 if it has none by that id."""
    session = sessions.authenticate()
    if not _webhooks().remove(session.id, webhook_id):
        raise NotFound("Webhook not found")
    return "", 204
