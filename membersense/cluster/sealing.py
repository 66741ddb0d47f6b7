"""Bot tokens as Redis keeps them: encrypted, never in clear.

Any process may have to act for any session (read messages, take over a
bot's gateway connection), so Redis mode keeps each session's token, sealed
with Fernet (AES-128-CBC with an HMAC-SHA256, from ``cryptography``) under a
key derived by HKDF from ``SESSION_SECRET``. A changed secret derives another
key: tokens sealed under the old one no longer open, so every session made
before the change ends.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["TokenSealer"]

_SALT = b"membersense token sealing"
_INFO = b"membersense v1 bot token"


class TokenSealer:
    """Seals and opens bot tokens with a key derived from *secret*."""

    def __init__(self, secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(
            secret.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        #: A short name for the key, stored beside sealed tokens (never the key itself).
        self.key_id = hashlib.sha256(b"key id" + key).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"<TokenSealer key={self.key_id}>"

    def seal(self, token: str) -> str:
        """The token, encrypted and authenticated (URL-safe text)."""
        return f"{self.key_id}.{self._fernet.encrypt(token.encode()).decode()}"

    def open(self, sealed: str) -> str | None:
        """The token; None when it was sealed under another secret (or tampered with)."""
        key_id, _, data = sealed.partition(".")
        if key_id != self.key_id:
            return None
        try:
            return self._fernet.decrypt(data.encode()).decode()
        except (InvalidToken, ValueError):
            return None

    def current(self, sealed: str | None) -> bool:
        """Whether *sealed* was sealed under this secret (a cheap check, no decryption)."""
        return sealed is not None and sealed.partition(".")[0] == self.key_id
