"""Bot tokens as MemberSense may keep and show them: by fingerprint only."""

from __future__ import annotations

import hashlib

__all__ = ["fingerprint"]


def fingerprint(token: str) -> str:
    """A short, stable, non-reversible name for a token, safe to log, store and compare.

    Sessions name their bot by it, connections are pooled by it, and logs
    show it instead of the token.
    """
    return hashlib.sha256(token.encode()).hexdigest()[:16]
