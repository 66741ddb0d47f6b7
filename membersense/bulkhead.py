"""Bulkheads: requests that wait on Discord get a bounded share of the threads.

gunicorn serves ``THREADS`` requests at once. A message-history read, a
login, or a message sent, edited or deleted waits on Discord (up to ``DISCORD_TIMEOUT`` / ``LOGIN_TIMEOUT``); if
Discord is slow, enough of them would hold every thread, and health checks
and member lists served from memory would queue behind them. So each kind of
Discord-bound request may hold only its share of the threads
(``MAX_CONCURRENT_HISTORY_READS``, ``MAX_CONCURRENT_LOGINS``,
``MAX_CONCURRENT_SENDS``, an eighth of ``THREADS`` each by default; event
streams hold at most half, see :mod:`membersense.events.live`, so an eighth
is always left for health checks and reads served from memory); past it, a request is answered ``503``
with ``Retry-After`` at once instead of waiting for a thread.

A view opts in with one line::

    @bp.get("/messages")
    @bulkhead("history")
    def list_messages(): ...
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Self, TypeVar, cast

from flask import Flask, current_app

from membersense.config import Settings
from membersense.errors import ServiceUnavailable

__all__ = ["KINDS", "Bulkhead", "bulkhead", "init_app"]

F = TypeVar("F", bound=Callable[..., Any])

#: The kinds of Discord-bound requests, and the message of their 503.
KINDS = {
    "history": "Too many message reads waiting on Discord; try again shortly",
    "login": "Too many logins under way; try again shortly",
    "send": "Too many messages being sent to Discord; try again shortly",
}
#: Seconds a refused client is told to wait: a share frees up as soon as one
#: call to Discord ends, usually well under a second.
RETRY_AFTER_S = 1
_EXTENSION = "membersense.bulkheads"


class Bulkhead:
    """At most *limit* concurrent holders; the next one is refused at once (503)."""

    def __init__(self, kind: str, limit: int) -> None:
        self.kind = kind
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def __enter__(self) -> Self:
        if not self._slots.acquire(blocking=False):
            raise ServiceUnavailable(KINDS[self.kind], retry_after=RETRY_AFTER_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


def init_app(app: Flask, settings: Settings) -> None:
    """Give *app* one bulkhead per kind, sized from the settings."""
    app.extensions[_EXTENSION] = {
        "history": Bulkhead("history", settings.history_reads_share),
        "login": Bulkhead("login", settings.logins_share),
        "send": Bulkhead("send", settings.sends_share),
    }


def bulkhead(kind: str) -> Callable[[F], F]:
    """Decorate a view so it runs inside the app's bulkhead of *kind*."""
    if kind not in KINDS:
        raise ValueError(f"unknown bulkhead kind {kind!r}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with current_app.extensions[_EXTENSION][kind]:
                return view(*args, **kwargs)

        return cast(F, guarded)

    return decorate
