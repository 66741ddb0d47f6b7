"""Wire-level pieces of the sandbox's Discord Gateway v10: opcodes, close codes,
intents, frame serialisation and transport compression.

Nothing here touches sockets or the world; :mod:`membersense.sandbox.gateway`
drives the connections and uses these helpers to speak Discord's dialect.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

import orjson

API_VERSION = 10


class Op:
    """Gateway opcodes (Discord's "Gateway Opcodes" table)."""

    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11
    REQUEST_SOUNDBOARD_SOUNDS = 31
    REQUEST_CHANNEL_INFO = 43


#: Opcodes a client may send that the sandbox accepts and ignores (no state of theirs is modelled).
IGNORED_CLIENT_OPS = frozenset(
    {
        Op.PRESENCE_UPDATE,
        Op.VOICE_STATE_UPDATE,
        Op.REQUEST_SOUNDBOARD_SOUNDS,
        Op.REQUEST_CHANNEL_INFO,
    }
)


class Close:
    """Gateway close event codes (Discord's "Gateway Close Event Codes" table)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNKNOWN_ERROR = 4000
    UNKNOWN_OPCODE = 4001
    DECODE_ERROR = 4002
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    ALREADY_AUTHENTICATED = 4005
    INVALID_SEQ = 4007
    RATE_LIMITED = 4008
    SESSION_TIMED_OUT = 4009
    INVALID_SHARD = 4010
    INVALID_API_VERSION = 4012
    INVALID_INTENTS = 4013
    DISALLOWED_INTENTS = 4014


#: Close codes after which Discord forgets the session (everything else leaves it resumable).
SESSION_ENDING_CLOSES = frozenset(
    {
        Close.NORMAL,
        Close.GOING_AWAY,
        Close.AUTHENTICATION_FAILED,
        Close.INVALID_SEQ,
        Close.INVALID_SHARD,
        Close.INVALID_API_VERSION,
        Close.INVALID_INTENTS,
        Close.DISALLOWED_INTENTS,
    }
)


#: Every intent bit Discord defines (0-16, 20, 21, 24, 25); any other bit is closed with 4013.
KNOWN_INTENTS = sum(1 << bit for bit in (*range(17), 20, 21, 24, 25))

#: Largest payload a client may send; bigger ones are closed with 4002 (as Discord does).
MAX_CLIENT_PAYLOAD = 4096
#: Discord allows 120 client events per connection per 60 s (heartbeats are not counted here, so
#: tests may use very short heartbeat intervals).
CLIENT_EVENTS_PER_MINUTE = 120
#: Members per GUILD_MEMBERS_CHUNK and the caps Discord puts on query / user_ids requests.
CHUNK_SIZE = 1000
MAX_QUERY_MEMBERS = 100
MAX_USER_IDS = 100
#: Longest nonce Discord echoes; longer ones are dropped.
MAX_NONCE_BYTES = 32


def dumps(value: Any) -> str:
    """Compact JSON text, as Discord sends it.

    orjson: a 100 000-member guild is 50 MB of chunks, which the standard library's
    encoder took longer to write than discord.py takes to read.
    """
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def control_frame(op: int, d: Any = None) -> str:
    """A non-dispatch payload (``s`` and ``t`` are null, as on Discord)."""
    return f'{{"t":null,"s":null,"op":{op:d},"d":{dumps(d)}}}'


def dispatch_frame(event: str, seq: int, d_json: str) -> str:
    """A dispatch payload around an already serialised ``d`` (serialised once per fan-out)."""
    return f'{{"t":"{event}","s":{seq:d},"op":0,"d":{d_json}}}'


def valid_nonce(nonce: Any) -> str | None:
    """The nonce to echo, or None (Discord ignores nonces that are not strings of <= 32 bytes)."""
    if isinstance(nonce, str) and len(nonce.encode()) <= MAX_NONCE_BYTES:
        return nonce
    return None


def parse_snowflake(value: Any) -> int | None:
    """An id sent as a string or an integer, or None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


_CONTENT_LIST_FIELDS = ("embeds", "attachments", "components")


def strip_message_content(message: dict[str, Any], bot_user_id: int) -> dict[str, Any]:
    """``message`` (a MESSAGE_CREATE / MESSAGE_UPDATE ``d``) as a bot without MESSAGE_CONTENT sees it.

    Discord empties ``content``, ``embeds``, ``attachments`` and ``components`` (and drops
    ``poll``) except in messages the bot wrote, messages that mention it, and DMs.  A quoted
    ``referenced_message`` is judged on its own (it carries no ``guild_id``; its parent's counts).
    """
    return _strip(message, str(bot_user_id), in_guild="guild_id" in message)


def _strip(message: dict[str, Any], bot_id: str, *, in_guild: bool) -> dict[str, Any]:
    referenced = message.get("referenced_message")
    quoted = (
        _strip(referenced, bot_id, in_guild=in_guild)
        if isinstance(referenced, dict)
        else referenced
    )
    author = message.get("author")
    visible = (
        not in_guild
        or (isinstance(author, dict) and author.get("id") == bot_id)
        or any(isinstance(m, dict) and m.get("id") == bot_id for m in message.get("mentions") or ())
    )
    if visible and quoted is referenced:
        return message
    stripped = dict(message)
    if "referenced_message" in stripped:
        stripped["referenced_message"] = quoted
    if not visible:
        if "content" in stripped:
            stripped["content"] = ""
        for key in _CONTENT_LIST_FIELDS:
            if key in stripped:
                stripped[key] = []
        stripped.pop("poll", None)
    return stripped


class FrameEncoder(Protocol):
    """Turns one gateway payload (JSON text) into what goes on the wire."""

    binary: bool

    def encode(self, text: str) -> str | bytes:
        """Encode one payload."""


class PlainEncoder:
    """No transport compression: every payload is one text frame."""

    binary = False

    def encode(self, text: str) -> str:
        """Return ``text`` unchanged."""
        return text


class ZlibStreamEncoder:
    """``compress=zlib-stream``: one zlib stream for the whole connection, each payload
    ending in a Z_SYNC_FLUSH (``00 00 ff ff``), one binary frame per payload."""

    binary = True

    def __init__(self) -> None:
        # Level 1: payloads are JSON that compresses well even at the fastest level, and the
        # big member chunks must stay cheap to produce.
        self._compressor = zlib.compressobj(1)

    def encode(self, text: str) -> bytes:
        """Compress ``text`` into the stream and flush it so the client can inflate it now."""
        return self._compressor.compress(text.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH)


def _zstd_compressobj_factory() -> Any:
    """A callable making a streaming zstd compressor, or None when no zstd library is present."""
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+

        return lambda: _StdlibZstd(zstd)
    except ImportError:
        pass
    try:
        import zstandard

        return lambda: _ZstandardZstd(zstandard)
    except ImportError:
        return None


class _StdlibZstd:
    def __init__(self, zstd: Any) -> None:
        self._zstd = zstd
        self._compressor = zstd.ZstdCompressor()

    def encode(self, data: bytes) -> bytes:
        return self._compressor.compress(data, self._zstd.ZstdCompressor.FLUSH_BLOCK)


class _ZstandardZstd:
    def __init__(self, zstandard: Any) -> None:
        self._zstandard = zstandard
        self._compressor = zstandard.ZstdCompressor().compressobj()

    def encode(self, data: bytes) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(
            self._zstandard.COMPRESSOBJ_FLUSH_BLOCK
        )


_ZSTD_FACTORY = _zstd_compressobj_factory()


class ZstdStreamEncoder:
    """``compress=zstd-stream``: one zstd stream per connection, each payload flushed as a
    block (the frame never ends), one binary frame per payload.  discord.py asks for it
    whenever a zstd library is importable."""

    binary = True

    def __init__(self) -> None:
        if _ZSTD_FACTORY is None:
            raise RuntimeError(
                "zstd-stream needs Python 3.14's compression.zstd or the zstandard package"
            )
        self._stream = _ZSTD_FACTORY()

    def encode(self, text: str) -> bytes:
        """Compress ``text`` and flush the block."""
        return self._stream.encode(text.encode())


def zstd_available() -> bool:
    """Whether ``compress=zstd-stream`` can be served by this interpreter."""
    return _ZSTD_FACTORY is not None


def encoder_for(compress: str | None) -> FrameEncoder | None:
    """The encoder for the ``compress`` query parameter, or None when it is unsupported."""
    if not compress:
        return PlainEncoder()
    if compress == "zlib-stream":
        return ZlibStreamEncoder()
    if compress == "zstd-stream" and zstd_available():
        return ZstdStreamEncoder()
    return None
