"""Reading one HTTP/1.1 request off a socket without trusting the client's pace.

:class:`RequestReader` is fed the bytes of a connection as they arrive (the
worker's poller reads them without blocking) and says when a whole request is
in: the head (request line and headers) and then the body its framing
announces (``Content-Length`` or ``chunked``), up to ``MAX_CONTENT_LENGTH``.
Only then does the worker hand the bytes to gunicorn's parser and a thread,
so a client that sends nothing, or trickles, never holds a thread.

It also keeps the connection's deadline:

- an idle kept-alive connection may wait ``keepalive`` seconds for its next
  request's first byte;
- the head must be complete ``header_timeout`` seconds after the connection
  opened (or after the first byte of a kept-alive connection's next request);
- the body gets ``header_timeout`` seconds from the end of the head, plus one
  second per ``body_min_rate`` bytes received (Apache ``mod_reqtimeout``'s
  rule), so a stalled body is cut off soon and a slow but steady one is not.

It frames requests only as far as needed to find where each one ends; gunicorn's
parser stays the judge of what is valid. Whatever the reader cannot frame
(conflicting or malformed framing headers, a bad chunk, a body over the limit)
is handed over as it stands, marked ``must_close``: gunicorn's parser or the
app answers with the right error, and the connection closes, since where the
next request would start is then unknown.

Pure logic: no sockets, no clock of its own (times are passed in), so it is
tested directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = ["ReadLimits", "ReadState", "RequestReader"]

_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"
#: Framing headers of a head, names matched as gunicorn does (no space before the colon).
_FRAMING_HEADER = re.compile(rb"\r\n(content-length|transfer-encoding):([^\r\n]*)", re.IGNORECASE)
_HEX = frozenset(b"0123456789abcdefABCDEF")
#: Chunk framing may cost this many times the largest body before the body is cut
#: off (one-byte chunks would cost six bytes a byte of data; real clients send big
#: chunks): it bounds what a connection buffers.
_CHUNK_OVERHEAD = 4


@dataclass(frozen=True)
class ReadLimits:
    """How long, how fast and how much a client may send (see the module docstring)."""

    header_timeout: float
    body_min_rate: float
    keepalive: float
    max_body: int
    #: Longest request line (gunicorn's ``limit_request_line``); past it gunicorn answers 414.
    max_request_line: int = 4094
    #: Largest head (request line plus headers); past it the client is answered 431.
    max_head: int = 65536
    #: Longest chunk-size line or trailer section of a chunked body.
    max_chunk_line: int = 8190


class ReadState(Enum):
    """Where a :class:`RequestReader` stands."""

    #: Nothing of the next request yet (a fresh or kept-alive connection).
    IDLE = "idle"
    #: Part of a request is in; keep reading.
    READING = "reading"
    #: A request is in (:meth:`RequestReader.take`), or as much as will ever be read of it.
    READY = "ready"
    #: The head grew past ``max_head`` without ending: answer 431 and close.
    HEAD_TOO_LARGE = "head too large"


class _Body(Enum):
    NONE = 0
    LENGTH = 1
    CHUNK_SIZE = 2
    CHUNK_DATA = 3
    CHUNK_CRLF = 4
    TRAILERS = 5


class RequestReader:
    """Frames the requests of one connection as their bytes arrive.

    *now* is when the connection opened (or its previous response was
    written: *kept_alive*), on the monotonic clock the caller keeps using;
    *pending* are bytes already read past the previous request (pipelining).
    """

    def __init__(
        self, limits: ReadLimits, now: float, *, kept_alive: bool = False, pending: bytes = b""
    ) -> None:
        self.limits = limits
        self.buffer = bytearray()
        self.state = ReadState.IDLE
        #: When the connection is cut off if the request is not in by then.
        self.deadline = now + (limits.keepalive if kept_alive else limits.header_timeout)
        #: Hand the request over, then close: its framing could not be followed to its end.
        self.must_close = False
        #: The head announced ``Expect: 100-continue`` and a body that is wanted.
        self.expects_continue = False
        self._kept_alive = kept_alive
        self._head_end = -1
        self._line_end = -1  # end of the request line, once seen
        self._body = _Body.NONE
        self._body_started = 0.0
        self._pos = 0  # where body framing resumes
        self._scan = 0  # where the search for the next line end resumes
        self._remaining = 0  # bytes left of a Content-Length body or of the current chunk
        self._decoded = 0  # body bytes a chunked body has carried so far
        self._end = 0  # end of the request, once READY
        self._whole: tuple[bytes, bytes] | None = None  # request and rest, when read in one
        if pending:
            self.feed(pending, now)

    @property
    def started(self) -> bool:
        """Whether any byte of the request has arrived (a silent client has sent none)."""
        return bool(self.buffer)

    def feed(self, data: bytes, now: float) -> None:
        """Take bytes read from the connection at time *now*."""
        if self.state in (ReadState.READY, ReadState.HEAD_TOO_LARGE) or not data:
            self.buffer += data
            return
        if self.state is ReadState.IDLE:
            if self._whole_in_one(data):
                return
            self.state = ReadState.READING
            if self._kept_alive:
                self.deadline = now + self.limits.header_timeout
        self.buffer += data
        if self._head_end < 0:
            self._read_head(len(data), now)
        if self._head_end >= 0 and self.state is ReadState.READING:
            self._read_body(now)

    def take(self) -> tuple[bytes, bytes]:
        """The request's bytes and those read past it (the next request's beginning)."""
        if self.state is not ReadState.READY:
            raise RuntimeError("no request to take")
        if self._whole is not None:
            return self._whole
        end = len(self.buffer) if self.must_close else self._end
        return bytes(self.buffer[:end]), bytes(self.buffer[end:])

    def _whole_in_one(self, data: bytes) -> bool:
        """The common case, at C speed: a whole head and no body in the first read.

        Anything else (a body, a partial head, anything unusual) takes the
        general path, which sees the same bytes.
        """
        end = data.find(_HEAD_END)
        if end < 0 or end + 4 > self.limits.max_head or data.startswith(_CRLF):
            return False
        stop = end + 4
        if (
            data.find(_CRLF) > self.limits.max_request_line
            or data.count(b"\n", 0, stop) != data.count(_CRLF, 0, stop)
            or _FRAMING_HEADER.search(data, 0, end + 2) is not None
        ):
            return False
        self.state = ReadState.READY
        self._whole = (data[:stop], data[stop:])
        return True

    # -- the head -----------------------------------------------------------

    def _read_head(self, added: int, now: float) -> None:
        buffer = self.buffer
        # Only new bytes are searched, so a client trickling its head byte by
        # byte costs linear time, not quadratic.
        start = len(buffer) - added
        # A terminator may straddle the previous read: look from 3 bytes before it.
        end = buffer.find(_HEAD_END, max(0, start - 3))
        # gunicorn refuses a bare LF as a line end: hand it over now instead of
        # waiting for a CRLF CRLF that may never come (the body may hold any bytes).
        head_stop = len(buffer) if end < 0 else end + 4
        # From the byte before the new ones (a CR there pairs with a LF here),
        # unless that byte is a LF already checked.
        seen = start - 1 if start and buffer[start - 1] != 0x0A else start
        if buffer.count(b"\n", seen, head_stop) != buffer.count(_CRLF, seen, head_stop):
            return self._ready_as_is()
        if self._line_end < 0:
            skip = 2 if buffer.startswith(_CRLF) else 0  # one empty line first is allowed
            self._line_end = buffer.find(_CRLF, max(skip, start - 1))
            if self._line_end < 0 and len(buffer) - skip > self.limits.max_request_line + 2:
                return self._ready_as_is()  # gunicorn answers 414
        if end < 0:
            if len(buffer) > self.limits.max_head:
                self.state = ReadState.HEAD_TOO_LARGE
            return None
        if end + 4 > self.limits.max_head:
            self.state = ReadState.HEAD_TOO_LARGE
            return None
        self._head_end = end + 4
        self._pos = self._scan = self._head_end
        self._body_started = now
        self.deadline = now + self.limits.header_timeout
        self._frame_body(bytes(buffer[: end + 2]))
        return None

    def _frame_body(self, head: bytes) -> None:
        lengths: list[bytes] = []
        codings: list[bytes] = []
        for name, value in _FRAMING_HEADER.findall(head):
            (lengths if name.lower() == b"content-length" else codings).append(value.strip(b" \t"))
        if codings:
            coding = [c.strip(b" \t").lower() for c in b",".join(codings).split(b",")]
            # gunicorn refuses all of these; let it say so.
            if lengths or coding[-1] != b"chunked" or coding.count(b"chunked") != 1:
                return self._ready_as_is()
            self._body = _Body.CHUNK_SIZE
        elif lengths:
            if len(lengths) != 1 or not lengths[0].isdigit():
                return self._ready_as_is()
            length = int(lengths[0])
            if length > self.limits.max_body:
                # The app answers 413 from the header alone; the body is never read.
                return self._ready_as_is()
            self._body = _Body.LENGTH
            self._remaining = length
        else:
            self._body = _Body.NONE
        self.expects_continue = self._body is not _Body.NONE and _expects_continue(head)
        return None

    # -- the body -----------------------------------------------------------

    def _read_body(self, now: float) -> None:
        if self._body is _Body.NONE:
            return self._ready_at(self._head_end)
        if self._body is _Body.LENGTH:
            available = len(self.buffer) - self._pos
            if available >= self._remaining:
                return self._ready_at(self._pos + self._remaining)
        else:
            self._read_chunks()
            if self.state is not ReadState.READING:
                return None
            if len(self.buffer) - self._head_end > self.limits.max_body * _CHUNK_OVERHEAD:
                return self._ready_as_is()
        received = len(self.buffer) - self._head_end
        self.deadline = (
            self._body_started + self.limits.header_timeout + received / self.limits.body_min_rate
        )
        return None

    def _read_chunks(self) -> None:
        buffer, limits = self.buffer, self.limits
        while self.state is ReadState.READING:
            if self._body is _Body.CHUNK_SIZE:
                line_end = buffer.find(_CRLF, max(self._pos, self._scan))
                if line_end < 0:
                    self._scan = max(self._pos, len(buffer) - 1)
                    if len(buffer) - self._pos > limits.max_chunk_line:
                        self._ready_as_is()
                    return
                size = bytes(buffer[self._pos : line_end]).split(b";", 1)[0].rstrip(b" \t")
                if not size or not _HEX.issuperset(size):
                    self._ready_as_is()
                    return
                self._remaining = int(size, 16)
                self._pos = line_end + 2
                self._body = _Body.CHUNK_DATA if self._remaining else _Body.TRAILERS
            elif self._body is _Body.CHUNK_DATA:
                taken = min(len(buffer) - self._pos, self._remaining)
                self._pos += taken
                self._remaining -= taken
                self._decoded += taken
                if self._decoded > limits.max_body:
                    # Enough is in for the app to see the body is too large (413).
                    self._ready_as_is()
                    return
                if self._remaining:
                    return
                self._body = _Body.CHUNK_CRLF
            elif self._body is _Body.CHUNK_CRLF:
                if len(buffer) - self._pos < 2:
                    return
                if buffer[self._pos : self._pos + 2] != _CRLF:
                    self._ready_as_is()
                    return
                self._pos += 2
                self._body = _Body.CHUNK_SIZE
            else:  # trailers: an empty line, or header lines and an empty line
                if buffer[self._pos : self._pos + 2] == _CRLF:
                    self._ready_at(self._pos + 2)
                    return
                end = buffer.find(_HEAD_END, max(self._pos, self._scan))
                if end >= 0:
                    self._ready_at(end + 4)
                    return
                self._scan = max(self._pos, len(buffer) - 3)
                if len(buffer) - self._pos > limits.max_head:
                    self._ready_as_is()
                return

    # -- outcomes -----------------------------------------------------------

    def _ready_at(self, end: int) -> None:
        self.state = ReadState.READY
        self._end = end

    def _ready_as_is(self) -> None:
        self.state = ReadState.READY
        self.must_close = True
        self.expects_continue = False
        self._end = len(self.buffer)


_EXPECT = re.compile(rb"\r\nexpect:[ \t]*100-continue[ \t]*(?=\r\n)", re.IGNORECASE)


def _expects_continue(head: bytes) -> bool:
    # HTTP/1.0 clients never wait for a 100 (RFC 9110 10.1.1), and gunicorn ignores it then.
    request_line_end = head.find(_CRLF, 2 if head.startswith(_CRLF) else 0)
    return head[:request_line_end].endswith(b"HTTP/1.1") and _EXPECT.search(head) is not None
