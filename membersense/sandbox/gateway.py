"""The sandbox's Discord Gateway v10 over WebSocket (``GET /ws``).

Unmodified discord.py and discord.js connect here: HELLO, heartbeats and their ACKs,
IDENTIFY (token, intents, session start budget) -> READY + one GUILD_CREATE per guild,
RESUME with replay, REQUEST_GUILD_MEMBERS -> GUILD_MEMBERS_CHUNK (with Discord's
30 s cooldown on "all members"), and the dispatches of every world change, filtered
by guild membership, shard and intents.  The control API drops, reconnects (op 7)
and invalidates (op 9) connections through :class:`Gateway`'s methods.

Deliberate choices where Discord is vague or the sandbox differs:

- ``encoding=etf`` is refused with close 4002 (only JSON is spoken); an unknown
  ``compress`` value with 4000; ``v`` other than 10 with 4012.
- IDENTIFY's ``compress: true`` (per-payload compression) is ignored: every payload is
  a text frame unless ``compress=zlib-stream`` / ``zstd-stream`` was asked for, which
  Discord also allows ("not all payloads will be compressed").
- A client that sends no heartbeat for ``interval * 1.5 + 1 s`` is closed with 4009; its
  session stays resumable (Discord's docs: "you will be forced to Resume").
- Asking for the whole member list without GUILD_MEMBERS closes with 4013.
- The 120-events-per-minute client limit (close 4008) does not count heartbeats.
- Chunks asked with ``presences`` (and GUILD_PRESENCES granted) carry the presences of
  the members in them that are not offline, as Discord leaves offline ones out.
- An empty session start budget answers IDENTIFY with op 9 (d=false) and leaves the
  socket open for the client to close.
- A session outlives its socket for ``gateway_session.RESUME_WINDOW_S`` (180 s of the
  world's clock) unless the client closed with 1000/1001 or the sandbox closed with a
  session-ending code; its replay buffer keeps the last 4096 dispatches (32 MiB at most).
- Without MESSAGE_CONTENT (requested in IDENTIFY; 4014 guarantees it is granted) message
  dispatches lose ``content``, ``embeds``, ``attachments``, ``components`` and ``poll``,
  except messages the bot wrote or that mention it, as on Discord.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from membersense.sandbox.gateway_members import (
    BadRequest,
    MemberRequestCooldown,
    chunk_payloads,
    parse_request,
    rate_limited_payload,
    select_members,
)
from membersense.sandbox.gateway_protocol import (
    API_VERSION,
    CLIENT_EVENTS_PER_MINUTE,
    IGNORED_CLIENT_OPS,
    KNOWN_INTENTS,
    MAX_CLIENT_PAYLOAD,
    SESSION_ENDING_CLOSES,
    Close,
    FrameEncoder,
    Op,
    control_frame,
    dumps,
    encoder_for,
    parse_snowflake,
    strip_message_content,
)
from membersense.sandbox.gateway_session import Session, SessionRegistry
from membersense.sandbox.models import INTENT_MESSAGE_CONTENT, PRIVILEGED_INTENTS
from membersense.sandbox.responses import server_error

if TYPE_CHECKING:
    from membersense.sandbox.config import SandboxConfig
    from membersense.sandbox.world import Bot, Guild, World, WorldEvent

_log = logging.getLogger(__name__)

#: Extra seconds past ``interval * 1.5`` before a silent client is closed.
HEARTBEAT_SLACK_S = 1.0
#: Frames waiting for a client that reads too slowly; past this it is dropped (as Discord does).
MAX_PENDING_FRAMES = 50_000
#: How long a close handshake may take before the socket is just cut.
CLOSE_TIMEOUT_S = 5.0
#: Discord's ``large_threshold`` bounds and default.
LARGE_THRESHOLD_MIN, LARGE_THRESHOLD_MAX, LARGE_THRESHOLD_DEFAULT = 50, 250, 50
#: Dispatches whose ``d`` is a message, stripped for sessions without MESSAGE_CONTENT.
_MESSAGE_EVENTS = frozenset({"MESSAGE_CREATE", "MESSAGE_UPDATE"})


class _CloseRequest:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Connection:
    """One open gateway WebSocket: its outgoing queue, encoder and heartbeat deadline.

    Every frame goes through one writer task, so frames leave in the order they were
    numbered and the zlib stream sees them in that order.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        encoder: FrameEncoder,
        interval_s: float,
    ) -> None:
        self.ws = ws
        self.request = request
        self.encoder = encoder
        self.session: Session | None = None
        #: Close code the sandbox sent (None when the client closed or the socket dropped).
        self.sent_close: int | None = None
        self._transport = request.transport
        self._queue: asyncio.Queue[str | _CloseRequest] = asyncio.Queue()
        self._closing = False
        self._close_queued = False
        self._loop = asyncio.get_running_loop()
        self._heartbeat_timeout = interval_s * 1.5 + HEARTBEAT_SLACK_S
        self._last_heartbeat = self._loop.time()
        self._events_window = (self._loop.time(), 0)
        self._writer = asyncio.create_task(self._write_loop(), name="sandbox-gateway-writer")
        self._watchdog = asyncio.create_task(
            self._watch_heartbeats(), name="sandbox-gateway-watchdog"
        )
        self.finished = asyncio.Event()

    @property
    def open(self) -> bool:
        """Whether frames can still be queued for this socket."""
        return not self._closing and not self.ws.closed

    def send(self, frame: str) -> None:
        """Queue one payload (dropped silently once a close is under way)."""
        if not self.open:
            return
        if self._queue.qsize() >= MAX_PENDING_FRAMES:
            _log.warning("gateway client reads too slowly; dropping the connection")
            self.abort()
            return
        self._queue.put_nowait(frame)

    def close_soon(self, code: int, reason: str = "") -> None:
        """Close with ``code`` after the frames already queued."""
        if not self.open:
            return
        self._closing = True
        self._close_queued = True
        self.sent_close = code
        self._queue.put_nowait(_CloseRequest(code, reason))

    def abort(self) -> None:
        """Cut the TCP connection: no close frame, the client sees an abnormal closure."""
        self._closing = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    def heartbeat(self, ack_delay_s: float) -> None:
        """Record a heartbeat from the client (pushes the timeout back); ACK it after *ack_delay_s*.

        The delay stands for Discord's network round trip (see
        ``SandboxConfig.heartbeat_ack_delay_ms``); frames queued meanwhile go first, and
        an ACK due after the socket closed is dropped as every late frame is.
        """
        self._last_heartbeat = self._loop.time()
        ack = control_frame(Op.HEARTBEAT_ACK)
        if ack_delay_s > 0:
            self._loop.call_later(ack_delay_s, self.send, ack)
        else:
            self.send(ack)

    def count_event(self) -> bool:
        """Count one client event; False when the client exceeded Discord's 120 per minute."""
        start, count = self._events_window
        now = self._loop.time()
        if now - start >= 60.0:
            start, count = now, 0
        self._events_window = (start, count + 1)
        return count + 1 <= CLIENT_EVENTS_PER_MINUTE

    async def finish(self) -> None:
        """Stop the background tasks once the receive loop has ended."""
        self._watchdog.cancel()
        if self._close_queued and not self._writer.done():
            # The writer still has to perform the close handshake the sandbox asked for.
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_TIMEOUT_S + 1)
            except TimeoutError:
                self.abort()
        self._writer.cancel()
        await asyncio.gather(self._writer, self._watchdog, return_exceptions=True)
        self.finished.set()

    async def _write_loop(self) -> None:
        ws, encoder = self.ws, self.encoder
        while True:
            item = await self._queue.get()
            if isinstance(item, _CloseRequest):
                try:
                    await ws.close(code=item.code, message=item.reason.encode())
                except (ConnectionError, RuntimeError):
                    pass
                return
            if ws.closed:
                continue
            data = encoder.encode(item)
            try:
                if isinstance(data, bytes):
                    await ws.send_bytes(data)
                else:
                    await ws.send_str(data)
            except (ConnectionError, RuntimeError):
                self._closing = True
                return

    async def _watch_heartbeats(self) -> None:
        while True:
            remaining = self._last_heartbeat + self._heartbeat_timeout - self._loop.time()
            if remaining <= 0:
                _log.info("gateway client stopped heartbeating; closing with 4009")
                self.close_soon(Close.SESSION_TIMED_OUT, "Session timed out.")
                return
            await asyncio.sleep(remaining)


class Gateway:
    """The gateway endpoint: every connection and session of one sandbox."""

    def __init__(self, world: World, config: SandboxConfig) -> None:
        self._world = world
        self._interval_ms = config.heartbeat_interval_ms
        self._ack_delay_s = config.heartbeat_ack_delay_ms / 1000
        self._sessions = SessionRegistry(world.clock)
        self._connections: set[Connection] = set()
        self._cooldown = MemberRequestCooldown(world.clock, config.member_request_cooldown_s)
        self._counters: Counter[str] = Counter()
        self._closed = False
        self._unsubscribe = world.events.subscribe(self._on_world_event)

    # ------------------------------------------------------------------ connections

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one gateway WebSocket (mounted at ``GET /ws``) until it closes."""
        if self._closed:
            return server_error(503).response()
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20, timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)

        refusal = self._refuse_query(request)
        if refusal is not None:
            await ws.close(code=refusal[0], message=refusal[1].encode())
            return ws
        encoder = encoder_for(request.query.get("compress"))
        assert encoder is not None  # _refuse_query checked it

        conn = Connection(ws, request, encoder, self._interval_ms / 1000)
        self._connections.add(conn)
        self._counters["connections_opened"] += 1
        conn.send(
            control_frame(
                Op.HELLO,
                {"heartbeat_interval": self._interval_ms, "_trace": ["membersense-sandbox"]},
            )
        )
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_frame(conn, msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
                if not conn.open:
                    break
        finally:
            await conn.finish()
            self._connections.discard(conn)
            self._end_connection(conn)
        return ws

    @staticmethod
    def _refuse_query(request: web.Request) -> tuple[int, str] | None:
        query = request.query
        version = query.get("v", str(API_VERSION))
        if version != str(API_VERSION):
            return Close.INVALID_API_VERSION, "Invalid API version."
        encoding = query.get("encoding", "json")
        if encoding != "json":
            return (
                Close.DECODE_ERROR,
                f"encoding={encoding} is not supported by the sandbox; use encoding=json.",
            )
        if encoder_for(query.get("compress")) is None:
            return (
                Close.UNKNOWN_ERROR,
                f"compress={query.get('compress')} is not supported by the sandbox.",
            )
        return None

    def _end_connection(self, conn: Connection) -> None:
        """Decide what happens to the connection's session once its socket is gone."""
        session = conn.session
        if session is None or session.connection is not conn:
            return
        client_code = None if conn.sent_close is not None else conn.ws.close_code
        ending = conn.sent_close in SESSION_ENDING_CLOSES or client_code in (
            Close.NORMAL,
            Close.GOING_AWAY,
        )
        if ending:
            self._sessions.discard(session)
            session.connection = None
        else:
            self._sessions.detach(session)

    # ------------------------------------------------------------------ client payloads

    async def _on_frame(self, conn: Connection, data: str | bytes) -> None:
        if len(data) > MAX_CLIENT_PAYLOAD:
            conn.close_soon(Close.DECODE_ERROR, "Payload too large.")
            return
        try:
            payload = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            conn.close_soon(Close.DECODE_ERROR, "Error while decoding payload.")
            return
        op = payload.get("op") if isinstance(payload, dict) else None
        if isinstance(op, bool) or not isinstance(op, int):
            conn.close_soon(Close.DECODE_ERROR, "Error while decoding payload.")
            return
        d = payload.get("d")
        if op == Op.HEARTBEAT:
            conn.heartbeat(self._ack_delay_s)
            return
        if not conn.count_event():
            conn.close_soon(Close.RATE_LIMITED, "You are being rate limited.")
            return
        if op == Op.IDENTIFY:
            self._identify(conn, d)
        elif op == Op.RESUME:
            self._resume(conn, d)
        elif op == Op.REQUEST_GUILD_MEMBERS:
            await self._request_members(conn, d)
        elif op in IGNORED_CLIENT_OPS:
            if conn.session is None:
                conn.close_soon(Close.NOT_AUTHENTICATED, "Not authenticated.")
        else:
            conn.close_soon(Close.UNKNOWN_OPCODE, "Unknown opcode.")

    def _authenticated_bot(self, conn: Connection, d: Any, opcode: str) -> Bot | None:
        """The checks IDENTIFY and RESUME share; None once the socket is being closed."""
        if conn.session is not None:
            conn.close_soon(Close.ALREADY_AUTHENTICATED, "Already authenticated.")
            return None
        if not isinstance(d, dict):
            conn.close_soon(Close.DECODE_ERROR, f"Invalid {opcode} payload.")
            return None
        token = d.get("token")
        bot = self._world.bot_for_token(token) if isinstance(token, str) else None
        if bot is None:
            if opcode == "IDENTIFY":
                self._counters["identify_rejected"] += 1
            conn.close_soon(Close.AUTHENTICATION_FAILED, "Authentication failed.")
        return bot

    def _identify(self, conn: Connection, d: Any) -> None:
        bot = self._authenticated_bot(conn, d, "IDENTIFY")
        if bot is None:
            return
        intents = d.get("intents")
        if (
            isinstance(intents, bool)
            or not isinstance(intents, int)
            or intents < 0
            or intents & ~KNOWN_INTENTS
        ):
            self._counters["identify_rejected"] += 1
            conn.close_soon(Close.INVALID_INTENTS, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~bot.granted_intents:
            self._counters["identify_rejected"] += 1
            conn.close_soon(Close.DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        try:
            shard = self._parse_shard(d.get("shard"))
        except ValueError:
            self._counters["identify_rejected"] += 1
            conn.close_soon(Close.INVALID_SHARD, "Invalid shard.")
            return
        threshold = d.get("large_threshold", LARGE_THRESHOLD_DEFAULT)
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            threshold = LARGE_THRESHOLD_DEFAULT
        threshold = min(max(threshold, LARGE_THRESHOLD_MIN), LARGE_THRESHOLD_MAX)

        if not self._world.spend_identify(bot):
            self._counters["identify_refused_budget"] += 1
            conn.send(control_frame(Op.INVALID_SESSION, False))
            return

        session = Session(bot, intents=intents, shard=shard, large_threshold=threshold)
        self._sessions.add(session)
        session.connection = conn
        conn.session = session
        self._counters["identified"] += 1
        guilds = [g for g in self._world.guilds_of(bot) if session.wants(g.id)]
        ready: dict[str, Any] = {
            "v": API_VERSION,
            "user": self._world.user_payload(bot.user, private=True),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self._resume_url(conn),
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
            "application": {"id": str(bot.application_id), "flags": bot.application_flags},
            "_trace": ["membersense-sandbox"],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        conn.send(session.next_frame("READY", dumps(ready)))
        for guild in guilds:
            payload = self._world.guild_create_payload(guild, bot, large_threshold=threshold)
            conn.send(session.next_frame("GUILD_CREATE", dumps(payload)))

    @staticmethod
    def _parse_shard(raw: Any) -> tuple[int, int] | None:
        """IDENTIFY's ``shard`` as ``(shard_id, num_shards)``, None when absent; ValueError when invalid."""
        if raw is None:
            return None
        if (
            not isinstance(raw, list)
            or len(raw) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in raw)
            or not 0 <= raw[0] < raw[1]
        ):
            raise ValueError(f"invalid shard {raw!r}")
        return raw[0], raw[1]

    @staticmethod
    def _resume_url(conn: Connection) -> str:
        request = conn.request  # the handshake request: its host is what the client dialled
        scheme = "wss" if request.secure else "ws"
        return f"{scheme}://{request.host}{request.path}"

    def _resume(self, conn: Connection, d: Any) -> None:
        bot = self._authenticated_bot(conn, d, "RESUME")
        if bot is None:
            return
        session = self._sessions.get(d.get("session_id"))
        seq = d.get("seq") or 0
        if session is None or session.bot is not bot:
            self._counters["resume_refused"] += 1
            conn.send(control_frame(Op.INVALID_SESSION, False))
            return
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= session.seq:
            self._sessions.discard(session)
            conn.close_soon(Close.INVALID_SEQ, "Invalid seq.")
            return
        frames = session.frames_after(seq)
        if frames is None:
            self._counters["resume_refused"] += 1
            self._sessions.discard(session)
            conn.send(control_frame(Op.INVALID_SESSION, False))
            return
        previous = session.connection
        if previous is not None:
            # The session moves to the new socket; the old one (a zombie) is cut.
            previous.session = None
            previous.abort()
        session.connection = conn
        session.detached_at = None
        conn.session = session
        self._counters["resumed"] += 1
        for frame in frames:
            conn.send(frame)
        conn.send(session.next_frame("RESUMED", '{"_trace":["membersense-sandbox"]}'))

    async def _request_members(self, conn: Connection, d: Any) -> None:
        session = conn.session
        if session is None:
            conn.close_soon(Close.NOT_AUTHENTICATED, "Not authenticated.")
            return
        try:
            request = parse_request(
                d,
                close_invalid_payload=Close.UNKNOWN_OPCODE,
                close_invalid_intents=Close.INVALID_INTENTS,
                intents=session.intents,
            )
        except BadRequest as exc:
            conn.close_soon(exc.code, exc.reason)
            return
        guild = self._world.guild(request.guild_id)
        if guild is None or not self._bot_in_guild(session.bot, guild):
            return  # Discord answers nothing for guilds the bot is not in
        if request.wants_everyone:
            wait = self._cooldown.try_acquire(session.bot, guild.id)
            if wait > 0:
                self._counters["member_requests_rate_limited"] += 1
                self._send(session, "RATE_LIMITED", rate_limited_payload(request, wait))
                return
        self._counters["member_requests"] += 1
        members, not_found = select_members(guild, request)
        for d_json in chunk_payloads(self._world, guild, request, members, not_found):
            self._send(session, "GUILD_MEMBERS_CHUNK", d_json)
            await asyncio.sleep(0)  # let heartbeats and other sockets through between chunks

    # ------------------------------------------------------------------ dispatch fan-out

    @staticmethod
    def _send(session: Session, event: str, d_json: str) -> None:
        frame = session.next_frame(event, d_json)
        if session.connection is not None:
            session.connection.send(frame)

    @staticmethod
    def _bot_in_guild(bot: Bot, guild: Guild) -> bool:
        return bot.id in guild.members

    def _on_world_event(self, event: WorldEvent) -> None:
        """EventHub listener: number and queue ``event`` for every session entitled to it."""
        if event.name == "TOKEN_REVOKED":
            self._revoke(event.bot_id)
            return
        guild = self._world.guild(event.guild_id) if event.guild_id is not None else None
        if event.guild_id is not None and guild is None:
            return
        full_json: str | None = None
        stripped_json: dict[int, str] = {}
        for session in self._sessions:
            if not self._receives(session, event, guild):
                continue
            if event.name in _MESSAGE_EVENTS and not session.intents & INTENT_MESSAGE_CONTENT:
                bot_id = session.bot.id
                if bot_id not in stripped_json:
                    stripped_json[bot_id] = dumps(strip_message_content(event.data, bot_id))
                d_json = stripped_json[bot_id]
            else:
                if full_json is None:
                    full_json = dumps(event.data)
                d_json = full_json
            self._counters["dispatched"] += 1
            self._send(session, event.name, d_json)

    def _receives(self, session: Session, event: WorldEvent, guild: Guild | None) -> bool:
        if session.connection is None and session.expired(self._world.clock()):
            return False
        bot = session.bot
        if guild is not None:
            if not self._bot_in_guild(bot, guild):
                return False
        elif event.bot_id is not None and event.bot_id != bot.id:
            return False
        if not session.wants(event.guild_id):
            return False
        if event.intent == 0 or session.intents & event.intent:
            return True
        # Discord sends GUILD_MEMBER_UPDATE about the bot itself regardless of intents.
        user = event.data.get("user") if event.name == "GUILD_MEMBER_UPDATE" else None
        return isinstance(user, dict) and parse_snowflake(user.get("id")) == bot.id

    def _revoke(self, bot_id: int | None) -> None:
        for session in self._sessions:
            if session.bot.id != bot_id:
                continue
            self._sessions.discard(session)
            if session.connection is not None:
                session.connection.close_soon(Close.AUTHENTICATION_FAILED, "Authentication failed.")

    # ------------------------------------------------------------------ control API

    async def drop_all(self) -> int:
        """Cut every gateway socket without a close frame; sessions stay resumable."""
        conns = [c for c in self._connections if c.open]
        for conn in conns:
            conn.abort()
        self._counters["dropped"] += len(conns)
        return len(conns)

    async def reconnect_all(self) -> int:
        """Send op 7 RECONNECT to every open socket (clients should reconnect and resume)."""
        conns = [c for c in self._connections if c.open]
        for conn in conns:
            conn.send(control_frame(Op.RECONNECT))
        return len(conns)

    async def invalidate_all(self) -> int:
        """Send op 9 INVALID_SESSION (d=false) to every identified socket and forget their sessions."""
        count = 0
        for conn in [c for c in self._connections if c.open and c.session is not None]:
            session = conn.session
            assert session is not None
            self._sessions.discard(session)
            session.connection = None
            conn.session = None
            conn.send(control_frame(Op.INVALID_SESSION, False))
            count += 1
        return count

    async def close(self) -> None:
        """Close every socket with 1001 (going away) and stop listening to the world.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        conns = list(self._connections)
        for conn in conns:
            conn.close_soon(Close.GOING_AWAY, "The sandbox is shutting down.")
        waits = [asyncio.create_task(c.finished.wait()) for c in conns]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=CLOSE_TIMEOUT_S + 2)
            for task in pending:
                task.cancel()
            for conn in conns:
                if not conn.finished.is_set():
                    conn.abort()
            await asyncio.gather(*waits, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        """Counts for ``GET /_sandbox/state``: sockets, sessions and what the gateway did."""
        identified = [c for c in self._connections if c.session is not None]
        by_bot: Counter[str] = Counter(
            str(c.session.bot.id) for c in identified if c.session is not None
        )
        sessions = list(self._sessions)
        return {
            "connections": len(self._connections),
            "identified_connections": len(identified),
            "sessions": len(sessions),
            "resumable_sessions": sum(1 for s in sessions if s.connection is None),
            "connections_by_bot": dict(by_bot),
            "heartbeat_interval_ms": self._interval_ms,
            **{name: self._counters[name] for name in _COUNTERS},
        }


_COUNTERS = (
    "connections_opened",
    "identified",
    "identify_rejected",
    "identify_refused_budget",
    "resumed",
    "resume_refused",
    "member_requests",
    "member_requests_rate_limited",
    "dispatched",
    "dropped",
)
