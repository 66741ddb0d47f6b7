"""A Server-Sent Events reader for tests: frames out of any iterator of byte chunks
(Flask's test client or a streaming ``requests`` response), parsed as the HTML spec says."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Frame:
    """One SSE block: its fields (``id``, ``event``, ``data``, ``retry``) and comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def event(self) -> str | None:
        return self.fields.get("event")

    @property
    def id(self) -> str | None:
        return self.fields.get("id")

    def json(self) -> Any:
        return json.loads(self.fields["data"])


class FrameReader:
    """Frames from *chunks*, one at a time; *check(fields)*, when given, sees each frame first
    (the contract's :meth:`~tests.contract.Contract.check_frame`)."""

    def __init__(
        self, chunks: Iterator[bytes], check: Callable[[Mapping[str, str]], None] | None = None
    ) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._check = check

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        while b"\n\n" not in self._buffer:
            self._buffer += next(self._chunks)  # StopIteration: the stream ended
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        frame = Frame()
        for line in block.decode().split("\n"):
            if line.startswith(":"):
                frame.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                frame.fields[name] = value[1:] if value.startswith(" ") else value
        if self._check is not None:
            self._check(frame.fields)
        return frame

    def next_event(self) -> Frame:
        """The next frame with fields (comments are skipped)."""
        while True:
            frame = next(self)
            if frame.fields:
                return frame

    def rest(self) -> list[Frame]:
        """Every frame until the stream ends."""
        return list(self)
