"""What MemberSense sends to Discord's message endpoints: the JSON bodies, built here.

A message sent through the API pings no one unless the client asks:
``allowed_mentions`` with an empty ``parse`` leaves ``@everyone``, role and user
mentions in the text but notifies nobody, and a reply does not ping the author
of the message it answers. ``allowMentions: true`` lets Discord's own rules
apply (``@everyone`` still needs the bot's Mention Everyone permission).

An ``Idempotency-Key`` becomes the message's ``nonce`` with ``enforce_nonce``:
Discord then answers a repeat of the same nonce by the same bot, within a few
minutes, with the message it already made instead of posting another. Discord
takes nonces of at most 25 characters, so the key is hashed (with the channel,
so one key in two channels is two messages).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

__all__ = ["MAX_CONTENT", "create_body", "edit_body", "nonce_for"]

#: Discord's limit on a message's content, in characters.
MAX_CONTENT = 2000
#: Discord's limit on a string nonce.
_NONCE_LENGTH = 25


def _mentions(allow: bool) -> dict[str, Any]:
    if allow:
        return {"parse": ["everyone", "roles", "users"], "replied_user": True}
    return {"parse": [], "replied_user": False}


def nonce_for(channel_id: int, key: str) -> str:
    """The message nonce for an idempotency key in a channel (25 URL-safe characters)."""
    digest = hashlib.sha256(f"{channel_id}\n{key}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:_NONCE_LENGTH]


def create_body(
    channel_id: int,
    content: str,
    *,
    reply_to: int | None = None,
    allow_mentions: bool = False,
    nonce: str | None = None,
) -> dict[str, Any]:
    """``POST /channels/{channel_id}/messages``: a text message, maybe a reply, maybe idempotent."""
    body: dict[str, Any] = {"content": content, "allowed_mentions": _mentions(allow_mentions)}
    if reply_to is not None:
        body["message_reference"] = {
            "message_id": str(reply_to),
            "channel_id": str(channel_id),
            "fail_if_not_exists": True,
        }
    if nonce is not None:
        body["nonce"] = nonce
        body["enforce_nonce"] = True
    return body


def edit_body(content: str, *, allow_mentions: bool = False) -> dict[str, Any]:
    """``PATCH /channels/{channel_id}/messages/{message_id}``: new content."""
    return {"content": content, "allowed_mentions": _mentions(allow_mentions)}
