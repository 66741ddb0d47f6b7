"""Logging: one line per event, JSON for log collectors or plain text.

JSON lines carry Cloud Run's ``severity`` and ``message`` keys, so Cloud
Logging files them at the right level; structured fields come from
``extra={"fields": {...}}``. A filter on the handler blanks anything shaped
like a Discord token, whatever logger it comes from (ours, discord.py's,
gunicorn's), as a last line of defence behind "never log a token"; another
keeps discord.py's payloads (member lists, message contents) out of the log
even at DEBUG. Client text is escaped (control characters in text lines; JSON
escapes everything) and no message grows past ``MAX_MESSAGE_CHARS``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson

from membersense.config import Settings

__all__ = [
    "JsonFormatter",
    "LineHandler",
    "OmitDiscordPayloads",
    "ReconnectsAreWarnings",
    "RedactTokens",
    "TextFormatter",
    "configure_logging",
]

#: Discord bot tokens: base64 user id, base64 timestamp, HMAC, dot-separated.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}")
REDACTED = "[redacted]"

#: Longest message a log line carries; the rest is cut (a request line can be 8 KB).
MAX_MESSAGE_CHARS = 2000
#: What stands for a discord.py payload in its debug messages.
PAYLOAD_OMITTED = "[payload omitted]"
#: Arguments of discord.py's messages that are kept: ids, names of routes and
#: events, URLs; a payload (a dict, a list, a JSON string) never matches.
_SAFE_ARGUMENT = re.compile(r"[\w.:/?&=%+@#-]{0,200}", re.ASCII)

#: Loggers MemberSense configures; discord.py is louder than we want at INFO.
_OWN_LOGGERS = ("membersense",)
_LIBRARY_LOGGERS = ("discord",)


#: The shortest text TOKEN_PATTERN matches: shorter values need no search.
_SHORTEST_TOKEN = 23 + 1 + 6 + 1 + 27


def _holds_token(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) >= _SHORTEST_TOKEN
        and TOKEN_PATTERN.search(value) is not None
    )


class RedactTokens(logging.Filter):
    """Replace token-shaped substrings in a record's message and fields.

    The message is formatted here once, for every later reader of the record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = message, None
        if _holds_token(message):
            record.msg = TOKEN_PATTERN.sub(REDACTED, message)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for value in fields.values():
                if _holds_token(value):
                    record.fields = {
                        k: TOKEN_PATTERN.sub(REDACTED, v) if isinstance(v, str) else v
                        for k, v in fields.items()
                    }
                    break
        return True


class ReconnectsAreWarnings(logging.Filter):
    """Log discord.py's "Attempting a reconnect" at WARNING instead of ERROR.

    discord.py logs every dropped gateway connection it is about to resume with
    ``log.exception`` (ERROR). Discord drops connections now and then as a matter of
    course (and the sandbox does so on purpose), discord.py resumes them, and nothing
    was lost: an operator's ERROR alerts must not fire for that. A reconnect that
    keeps failing still shows, once per attempt, as a warning with its exception type.
    """

    _LOGGER = "discord.client"
    _MESSAGE = "Attempting a reconnect in %.2fs"

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno > logging.WARNING
            and record.name == self._LOGGER
            and record.msg == self._MESSAGE
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class OmitDiscordPayloads(logging.Filter):
    """Keep discord.py's payloads out of the log, at every level.

    At DEBUG discord.py logs every gateway event and REST answer whole
    (``WebSocket Event: %s``, ``%s %s has received %s``): member lists,
    message contents. Its messages keep their text; arguments that are
    payloads (anything but numbers and short URL-like strings) become
    ``[payload omitted]``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("discord") and record.args:
            if isinstance(record.args, Mapping):
                record.args = {k: _loggable_argument(v) for k, v in record.args.items()}
            else:
                record.args = tuple(_loggable_argument(arg) for arg in record.args)
        return True


def _loggable_argument(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and _SAFE_ARGUMENT.fullmatch(value):
        return value
    return PAYLOAD_OMITTED


def _message(record: logging.LogRecord) -> str:
    message = record.getMessage()
    if len(message) > MAX_MESSAGE_CHARS:
        return message[:MAX_MESSAGE_CHARS] + "...[cut]"
    return message


#: Valid inside a JSON string, yet a line break to some log viewers: escaped.
_JSON_LINE_BREAKERS = {code: f"\\u{code:04x}" for code in (0x85, 0x2028, 0x2029)}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, severity, logger, message, fields."""

    def __init__(self) -> None:
        super().__init__()
        # (second, its text): every line of the same second shares the formatting.
        self._second: tuple[int, str] = (-1, "")

    def _time(self, record: logging.LogRecord) -> str:
        whole = int(record.created)
        second, text = self._second  # one tuple: a thread switch never splits the pair
        if second != whole:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "severity": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        # Exceptions are reported by type, never with their text or traceback.
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        # orjson: a fifth of the standard library's time, on every request's access line.
        # It writes UTF-8 as is: the characters some log viewers break lines at are escaped.
        line = orjson.dumps(entry, default=str).decode()
        return line if line.isascii() else line.translate(_JSON_LINE_BREAKERS)


#: Control characters as visible escapes: a request path with a newline in it
#: must not start a second, forged line of a text log (nor a NEL or a Unicode
#: line separator, which some log viewers break lines at).
_ESCAPE_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(32), *range(127, 160)]}
_ESCAPE_CONTROLS.update({code: f"\\u{code:04x}" for code in (0x2028, 0x2029)})


def _escaped(value: object) -> str:
    return str(value).translate(_ESCAPE_CONTROLS)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` for humans at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {_escaped(_message(record))}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={_escaped(v)}" for k, v in fields.items())
        if record.exc_info and record.exc_info[0] is not None:
            line += f" exception={record.exc_info[0].__name__}"
        return line


class LineHandler(logging.Handler):
    """Writes each record as one line, formatted outside any lock.

    ``logging.StreamHandler`` formats and writes while holding its lock; under
    gunicorn's threads every request's access line then queues on that lock
    behind a write syscall (measured: a quarter of a busy worker's time). A
    stream with a file descriptor gets each line in a single ``os.write``,
    which the kernel keeps whole (pipes up to PIPE_BUF, files by offset
    locking), so no lock is needed; other streams (tests' StringIO) are
    written under the handler's lock.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        try:
            line = self.format(record) + "\n"
            if self._fd is not None:
                data = line.encode("utf-8", "replace")
                while data:
                    data = data[os.write(self._fd, data) :]
            else:
                # logging types Handler.lock as optional; createLock() made it.
                with self.lock:  # type: ignore[union-attr]
                    self.stream.write(line)
                    self.stream.flush()
        except Exception:  # logging's own contract: handleError, never raise
            self.handleError(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


def make_handler(log_format: str, stream: Any = None) -> logging.Handler:
    """A line handler with the chosen formatter and the token filter."""
    handler = LineHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    # In this order: RedactTokens formats the message, which the others read unformatted.
    handler.addFilter(OmitDiscordPayloads())
    handler.addFilter(ReconnectsAreWarnings())
    handler.addFilter(RedactTokens())
    handler.set_name("membersense")
    return handler


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Point MemberSense's and its libraries' loggers at one handler.

    Idempotent: calling it again (another app in the same process) replaces
    the handler rather than adding a second one.
    """
    handler = make_handler(settings.log_format, stream)
    # Neither formatter prints a thread's or process's name: every record would look
    # them up (a twelfth of an access line's cost) for nothing.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    library_level = logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
    # The root logger too: asyncio's "Task exception was never retrieved" and any
    # other library's warnings then come out in our format, through the filter,
    # instead of through Python's last-resort handler with their tracebacks.
    for name in ("", *_OWN_LOGGERS, *_LIBRARY_LOGGERS):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == "membersense"]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        if name:
            logger.propagate = False
        logger.setLevel(settings.log_level if name in _OWN_LOGGERS else library_level)
