"""Helpers for the gateway tests: a raw gateway client over aiohttp, and discord.py wiring.

Kept out of conftest so test modules (and benchmarks) import what they use explicitly.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

ALL_INTENTS = 53608447  # every intent discord.py knows (discord.Intents.all().value)
GUILDS, GUILD_MEMBERS, GUILD_PRESENCES, GUILD_MESSAGES, MESSAGE_CONTENT = (
    1,
    1 << 1,
    1 << 8,
    1 << 9,
    1 << 15,
)


class Closed(Exception):
    """The server closed the socket; ``code`` is its close code (None for an abrupt drop)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


class RawGateway:
    """A bare gateway client: sends payloads, receives decoded ones, nothing automatic.

    Use as ``async with RawGateway.connect(url) as gw:``.
    """

    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, compressed: bool
    ) -> None:
        self.session = session
        self.ws = ws
        self.compressed = compressed
        self._inflater = zlib.decompressobj()
        self._buffer = bytearray()
        self.seq: int | None = None

    @classmethod
    def connect(
        cls, url: str, *, compress: bool = False, query: dict[str, str] | None = None
    ) -> _Connector:
        """Open ``url`` with ``v=10&encoding=json`` (and ``compress=zlib-stream`` when asked)."""
        params = {"v": "10", "encoding": "json"}
        if compress:
            params["compress"] = "zlib-stream"
        if query is not None:
            params = query
        return _Connector(cls, url, params, compress)

    async def send(self, payload: Any) -> None:
        """Send one payload as JSON text."""
        await self.ws.send_str(json.dumps(payload))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next payload; raises :class:`Closed` when the server closed the socket."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type is aiohttp.WSMsgType.BINARY:
                assert self.compressed, "binary frame without compression"
                self._buffer.extend(msg.data)
                if not bytes(msg.data).endswith(b"\x00\x00\xff\xff"):
                    continue
                text = self._inflater.decompress(bytes(self._buffer)).decode()
                self._buffer.clear()
            elif msg.type is aiohttp.WSMsgType.TEXT:
                assert not self.compressed, "text frame on a zlib-stream connection"
                text = msg.data
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                code = self.ws.close_code
                raise Closed(None if code == 1006 else code, str(msg.extra or ""))
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise Closed(None, str(msg.data))
            else:
                continue
            payload = json.loads(text)
            if payload.get("s") is not None:
                self.seq = payload["s"]
            return payload

    async def recv_dispatch(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        """Skip payloads until the dispatch ``name``; returns the whole payload."""
        deadline = time.monotonic() + timeout
        while True:
            payload = await self.recv(max(0.01, deadline - time.monotonic()))
            if payload["op"] == 0 and payload["t"] == name:
                return payload

    async def expect_close(self, timeout: float = 5.0) -> Closed:
        """Read until the server closes; returns the closure."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                await self.recv(max(0.01, deadline - time.monotonic()))
        except Closed as closed:
            return closed

    async def hello(self) -> dict[str, Any]:
        """Read HELLO (the first payload)."""
        payload = await self.recv()
        assert payload["op"] == 10, payload
        return payload

    async def identify(
        self, token: str, intents: int = ALL_INTENTS, **extra: Any
    ) -> tuple[dict, list[dict]]:
        """HELLO, IDENTIFY, READY and the GUILD_CREATEs; returns (READY d, [GUILD_CREATE d])."""
        await self.hello()
        await self.send(
            {
                "op": 2,
                "d": {
                    "token": token,
                    "intents": intents,
                    "properties": {"os": "linux", "browser": "test", "device": "test"},
                    **extra,
                },
            }
        )
        ready = await self.recv()
        assert ready["t"] == "READY", ready
        guilds = []
        for _ in ready["d"]["guilds"]:
            created = await self.recv()
            assert created["t"] == "GUILD_CREATE", created
            guilds.append(created["d"])
        return ready["d"], guilds

    async def sync(self) -> list[dict[str, Any]]:
        """Heartbeat and wait for its ACK; returns the payloads the server had queued before it."""
        await self.send({"op": 1, "d": self.seq})
        before = []
        while (payload := await self.recv())["op"] != 11:
            before.append(payload)
        return before

    async def close(self) -> None:
        """Close the socket (1000) and the client session."""
        await self.ws.close()
        await self.session.close()


class _Connector:
    def __init__(
        self, cls: type[RawGateway], url: str, params: dict[str, str], compress: bool
    ) -> None:
        self._args = (cls, url, params, compress)
        self._gw: RawGateway | None = None

    async def __aenter__(self) -> RawGateway:
        cls, url, params, compress = self._args
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, params=params, autoclose=False, max_msg_size=0)
        except BaseException:
            await session.close()
            raise
        self._gw = cls(session, ws, compress)
        return self._gw

    async def __aexit__(self, *exc: object) -> None:
        assert self._gw is not None
        await self._gw.close()


async def poll(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Await until ``predicate()`` is truthy (returns it) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def point_discordpy_at(server: Any) -> None:
    """Make discord.py talk to ``server`` (its two process-wide endpoint settings)."""
    import discord
    import yarl

    discord.http.Route.BASE = server.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)


async def run_client(
    client: Any, token: str, body: Callable[[], Awaitable[Any]], timeout: float = 30.0
) -> Any:
    """Start ``client`` with ``token``, run ``body()`` while it runs, then close it.

    Whatever ``client.start`` raised (e.g. ConnectionClosed 4004) propagates.
    """
    start = asyncio.create_task(client.start(token))
    try:
        body_task = asyncio.create_task(body())
        done, _ = await asyncio.wait(
            {start, body_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if body_task in done:
            return body_task.result()
        body_task.cancel()
        await asyncio.gather(body_task, return_exceptions=True)
        if start in done:
            start.result()  # raises what the client raised
            raise AssertionError("client stopped before the test body finished")
        raise AssertionError(f"test body did not finish within {timeout}s")
    finally:
        await client.close()
        await asyncio.gather(start, return_exceptions=True)


async def control(gw_or_session: Any, server: Any, method: str, path: str, body: Any = None) -> Any:
    """Call the control API (``/_sandbox{path}``) from async code; returns the decoded JSON (or None)."""
    session = gw_or_session.session if isinstance(gw_or_session, RawGateway) else gw_or_session
    async with session.request(method, f"{server.base_url}/_sandbox{path}", json=body) as response:
        assert response.status < 300, (response.status, await response.text())
        return None if response.status == 204 else await response.json()
