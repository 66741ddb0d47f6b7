"""Injected REST faults: fail or slow the next N REST calls (optionally only matching paths)."""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from typing import Any

#: Statuses a fault may answer with (429 is a "shared" resource limit, as Discord sends them).
FAULT_STATUSES = (429, 500, 502, 503, 504)


@dataclass
class Fault:
    """One armed fault: the next ``remaining`` matching calls wait ``delay_ms`` then answer ``status``."""

    status: int | None
    remaining: int
    path: str | None = None
    delay_ms: int = 0
    retry_after: float = 1.0

    def matches(self, path: str) -> bool:
        """Whether ``path`` (after ``/api/v10``) falls under this fault's glob."""
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the control API."""
        return asdict(self)


class FaultInjector:
    """The armed faults, consumed in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Arm ``fault`` (a fault with ``remaining`` 0 clears every fault instead)."""
        if fault.remaining <= 0:
            self._faults.clear()
        else:
            self._faults.append(fault)

    def clear(self) -> None:
        """Disarm everything."""
        self._faults.clear()

    def take(self, path: str) -> Fault | None:
        """The fault for this call, if any (one use of it is spent)."""
        for fault in self._faults:
            if fault.matches(path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def active(self) -> list[dict[str, Any]]:
        """The armed faults, for the control API."""
        return [f.as_dict() for f in self._faults]
