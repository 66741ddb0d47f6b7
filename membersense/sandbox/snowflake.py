"""Real Discord snowflakes (timestamp-based ids) and Discord's timestamp format.

A snowflake is ``(ms since 2015-01-01) << 22 | worker << 17 | process << 12 | increment``,
so clients derive ``created_at`` from any id the sandbox hands out.
"""

from __future__ import annotations

import datetime as _dt
import time

DISCORD_EPOCH_MS = 1420070400000
_UTC = _dt.UTC


def make_snowflake(unix_ms: int, *, worker: int = 0, process: int = 0, increment: int = 0) -> int:
    """Build the snowflake for ``unix_ms`` (milliseconds since 1970) and the low bits."""
    return (
        ((unix_ms - DISCORD_EPOCH_MS) << 22)
        | ((worker & 31) << 17)
        | ((process & 31) << 12)
        | (increment & 4095)
    )


def snowflake_ms(snowflake: int) -> int:
    """Milliseconds since 1970 at which ``snowflake`` was made."""
    return (snowflake >> 22) + DISCORD_EPOCH_MS


def iso_timestamp(unix_ms: int) -> str:
    """Discord's ISO 8601 timestamp form, e.g. ``2024-05-01T12:00:00.123000+00:00``."""
    return _dt.datetime.fromtimestamp(unix_ms / 1000, _UTC).isoformat(timespec="microseconds")


def now_ms() -> int:
    """Wall-clock milliseconds since 1970 (snowflakes are wall-clock based)."""
    return time.time_ns() // 1_000_000


class SnowflakeFactory:
    """Hands out unique snowflakes; ids for "now" are strictly increasing.

    Generated history asks for ids at chosen past times (:meth:`at`); live changes
    ask for :meth:`next`, which never goes below an id already issued for "now",
    so a new message always sorts after the channel's history.
    """

    def __init__(self, worker: int = 1, process: int = 0) -> None:
        self._worker = worker
        self._process = process
        self._used: set[int] = set()
        #: Next free increment per millisecond, so a busy millisecond is not rescanned.
        self._next_increment: dict[int, int] = {}
        self._last_live = 0

    def at(self, unix_ms: int) -> int:
        """A fresh snowflake whose timestamp is ``unix_ms`` (or the next ms once 4096 ids used it)."""
        while True:
            base = make_snowflake(unix_ms, worker=self._worker, process=self._process)
            increment = self._next_increment.get(unix_ms, 0)
            while increment < 4096 and base | increment in self._used:
                increment += 1
            if increment < 4096:
                self._next_increment[unix_ms] = increment + 1
                flake = base | increment
                self._used.add(flake)
                return flake
            unix_ms += 1

    def next(self) -> int:
        """A fresh snowflake for the current wall-clock time, greater than every earlier one."""
        flake = max(self.at(now_ms()), self._last_live + 1)
        self._used.add(flake)
        self._last_live = flake
        return flake
