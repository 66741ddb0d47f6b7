"""How deliveries are signed, and how a receiver checks them.

Each delivery carries ``X-MemberSense-Timestamp`` (integer Unix seconds, at
the try) and ``X-MemberSense-Signature: sha256=<hex>``, the HMAC-SHA256 of
``"<timestamp>.<body>"`` keyed with the subscription's secret. A receiver
recomputes it over the raw body it got, compares in constant time, and
refuses timestamps more than 300 s away from its clock (a replayed delivery).
The README shows the same check in a few lines of plain Python.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

__all__ = ["TOLERANCE_S", "new_secret", "signature", "verify"]

#: How far a delivery's timestamp may be from the receiver's clock.
TOLERANCE_S = 300


def new_secret() -> str:
    """A new signing secret (shown to the client once)."""
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-MemberSense-Signature`` value of *body* sent at *timestamp*."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    signature_header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """Whether a delivery's headers sign *body* with *secret*, recently enough."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, sent, body), signature_header)
