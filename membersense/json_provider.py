"""The app's JSON answers, written by orjson.

Flask's default provider writes with the standard library's ``json``; orjson
writes the same documents in a fraction of the time (channels, messages and
every error are JSON; the member list is written by
:mod:`membersense.discord.serializers`, with orjson too). Keys keep their
order (as ``sort_keys = False`` did), and what orjson does not know falls back
to Flask's own conversions. Reading JSON stays Flask's (and
:func:`membersense.api.params.json_body`'s): the standard library's rules.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

__all__ = ["OrjsonProvider"]

_OPTIONS = orjson.OPT_NON_STR_KEYS  # {1: ...} becomes {"1": ...}, as with json


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider, writing with orjson (see the module docstring)."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """*obj* as JSON text (Flask's options for pretty output are not used)."""
        return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()
