"""A tiny method + path-template router, so REST and control answer unknown routes in Discord's JSON.

Templates look like Discord's documentation: ``/channels/{channel_id}/messages/{message_id}``.
Parameters ending in ``_id`` match snowflakes (digits) and are passed as ints; others match
one path segment and are passed as strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from membersense.sandbox.responses import method_not_allowed, not_found

#: Parameters whose value names the rate-limit bucket's resource (Discord's "major parameters").
MAJOR_PARAMETERS = ("guild_id", "channel_id", "webhook_id")

_PARAM = re.compile(r"\{(\w+)\}")


def _compile(template: str) -> re.Pattern[str]:
    pattern, last = [], 0
    for match in _PARAM.finditer(template):
        pattern.append(re.escape(template[last : match.start()]))
        name = match.group(1)
        pattern.append(
            rf"(?P<{name}>\d{{1,20}})" if name.endswith("_id") else rf"(?P<{name}>[^/]+)"
        )
        last = match.end()
    pattern.append(re.escape(template[last:]))
    return re.compile("".join(pattern) + r"/?\Z")


@dataclass(frozen=True)
class Route:
    """One endpoint: method, template and the handler (plus per-table options)."""

    method: str
    template: str
    handler: Callable[..., Any]
    auth: bool = True
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", _compile(self.template))

    @property
    def key(self) -> str:
        """``"GET /guilds/{guild_id}"``: what a rate-limit bucket is named after."""
        return f"{self.method} {self.template}"


class RouteTable:
    """Routes matched in order; raises Discord's 404 / 405 errors for unknown paths and methods."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def match(self, method: str, path: str) -> tuple[Route, dict[str, Any]]:
        """The route and its parameters for ``method path``."""
        path_known = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            path_known = True
            if route.method == method:
                params = {
                    k: int(v) if k.endswith("_id") else v for k, v in found.groupdict().items()
                }
                return route, params
        raise method_not_allowed() if path_known else not_found()


def major_parameter(params: dict[str, Any]) -> str:
    """The major parameter's value of a matched route ("" when it has none)."""
    for name in MAJOR_PARAMETERS:
        if name in params:
            return str(params[name])
    return ""
