"""The sandbox's aiohttp application and the two ways to run it.

* :func:`start_sandbox` builds the world and serves it on the running event loop (the CLI
  runs it under ``asyncio.run``);
* :class:`SandboxServer` runs the same thing on its own event loop in a named daemon thread
  (a :class:`membersense.bridge.Bridge`, as MemberSense runs discord.py), for tests and
  benchmarks, with :meth:`SandboxServer.run` as the thread-safe way in.

Routes: REST under ``/api/v10`` and ``/api``, the gateway at ``/ws`` (503 when
``membersense.sandbox.gateway`` is not importable), the control API under ``/_sandbox``,
and Discord's CDN paths (avatars, icons, attachments) from the root.
"""

from __future__ import annotations

import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from membersense.bridge import Bridge
from membersense.sandbox.cdn import add_cdn_routes
from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.control import handle_control
from membersense.sandbox.generator import build_world
from membersense.sandbox.responses import server_error
from membersense.sandbox.rest import handle_api
from membersense.sandbox.state import STATE, SandboxState
from membersense.sandbox.world import World

_log = logging.getLogger(__name__)
T = TypeVar("T")

#: Large enough for Discord's attachment uploads (25 MiB) plus the multipart framing.
MAX_REQUEST_BYTES = 26 * 1024 * 1024


def load_gateway(world: World, config: SandboxConfig) -> Any | None:
    """The gateway engine, or None while ``membersense.sandbox.gateway`` does not exist.

    Any other import problem (a bug in the gateway module) is raised, not hidden.
    """
    try:
        from membersense.sandbox.gateway import Gateway
    except ModuleNotFoundError as exc:
        if exc.name != "membersense.sandbox.gateway":
            raise
        _log.warning("membersense.sandbox.gateway is not available; /ws answers 503")
        return None
    return Gateway(world, config)


async def _gateway_unavailable(request: web.Request) -> web.StreamResponse:
    return server_error(503).response()


def create_app(state: SandboxState) -> web.Application:
    """The aiohttp application serving ``state``'s world."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[STATE] = state
    # /api/v10 first: under the bare /api alias, "v10/..." would otherwise be taken as the path.
    app.router.add_route("*", "/api/v10/{tail:.*}", handle_api)
    app.router.add_route("*", "/api/{tail:.*}", handle_api)
    app.router.add_route(
        "GET", "/ws", state.gateway.handle if state.gateway is not None else _gateway_unavailable
    )
    app.router.add_route("*", "/_sandbox/{tail:.*}", handle_control)
    add_cdn_routes(app)
    return app


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"  # a wildcard bind is reachable on loopback
    return f"[{host}]" if ":" in host else host


class RunningSandbox:
    """A sandbox serving on the current event loop; :meth:`stop` ends it."""

    def __init__(self, state: SandboxState, runner: web.AppRunner, host: str, port: int) -> None:
        self.state = state
        self.runner = runner
        self.host = host
        self.port = port
        self._stopped = False

    @property
    def world(self) -> World:
        """The served world."""
        return self.state.world

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def api_url(self) -> str:
        """``http://HOST:PORT/api/v10`` (discord.py's ``Route.BASE``)."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """``ws://HOST:PORT/ws``."""
        return f"ws://{_url_host(self.host)}:{self.port}/ws"

    @property
    def cdn_url(self) -> str:
        """``http://HOST:PORT``: Discord's CDN paths are served from the root."""
        return self.base_url

    @property
    def tokens(self) -> list[str]:
        """Every bot token of the world, in creation order."""
        return [bot.token for bot in self.state.world.bots.values()]

    def ready_line(self) -> str:
        """The one line the CLI prints once listening."""
        return (
            f"sandbox ready api={self.api_url} gateway={self.gateway_url} cdn={self.cdn_url} "
            f"tokens={','.join(self.tokens)}"
        )

    async def stop(self) -> None:
        """Close gateway sockets cleanly, then the HTTP server.  Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.state.gateway is not None:
            await self.state.gateway.close()
        await self.runner.cleanup()


async def start_sandbox(
    config: SandboxConfig, *, access_log: bool = False, sock: socket.socket | None = None
) -> RunningSandbox:
    """Build the world of ``config`` and serve it on the running loop (port 0: a free port).

    With *sock* (a bound socket, e.g. one ``membersense demo`` bound before starting
    anything), it is served instead of binding ``config.host:config.port``.
    """
    world = build_world(config)
    gateway = load_gateway(world, config)
    state = SandboxState.create(world, config, gateway)
    runner = web.AppRunner(
        create_app(state), access_log=_log if access_log else None, handle_signals=False
    )
    await runner.setup()
    try:
        site: web.BaseSite = (
            web.SockSite(runner, sock)
            if sock is not None
            else web.TCPSite(runner, config.host, config.port)
        )
        await site.start()
    except BaseException:
        if gateway is not None:
            await gateway.close()
        await runner.cleanup()
        raise
    host, port = (
        runner.addresses[0][:2] if sock is not None else (config.host, runner.addresses[0][1])
    )
    running = RunningSandbox(state, runner, host, port)
    # Set before the loop runs a request: every attachment URL names this server.
    world.cdn_base = running.cdn_url
    return running


class SandboxServer:
    """A sandbox on its own event loop in a daemon thread (tests, benchmarks, the demo).

    ``SandboxServer(members=50).start()`` returns once listening; use :meth:`run` to reach
    the world thread-safely and :meth:`stop` (or ``with``) to shut everything down.
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else SandboxConfig(port=0)
        self.config = base.replace(**overrides) if overrides else base
        self._bridge: Bridge | None = None
        self._running: RunningSandbox | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 60.0) -> SandboxServer:
        """Start serving; returns when the socket listens (raises what start-up raised)."""
        if self._bridge is not None:
            raise RuntimeError("sandbox already started")
        self._bridge = Bridge(name="membersense-sandbox")
        try:
            self._running = self._bridge.call(start_sandbox, self.config, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Close gateway sockets, the server and the loop; join the thread.  Idempotent."""
        bridge, running = self._bridge, self._running
        if bridge is None:
            return
        self._running = None
        try:
            if running is not None:
                bridge.call(running.stop, timeout=timeout)
        finally:
            bridge.stop(timeout)
            self._bridge = None

    def __enter__(self) -> SandboxServer:
        return self.start() if self._bridge is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- access
    def run(self, fn: Callable[[], T | Awaitable[T]] | Awaitable[T], timeout: float = 30.0) -> T:
        """Run ``fn`` (a callable, possibly async, or an awaitable) on the sandbox loop; return its result.

        Refused (RuntimeError) when the sandbox is not running, from the sandbox's own thread,
        and in a process forked after it started.
        """
        bridge = self._bridge
        if self._running is None or bridge is None:
            if inspect.iscoroutine(fn):
                fn.close()
            raise RuntimeError("sandbox is not running")

        async def call() -> T:
            result = fn if inspect.isawaitable(fn) else fn()
            if inspect.isawaitable(result):
                result = await result
            return result

        try:
            return bridge.call(call, timeout=timeout)
        except RuntimeError:
            if inspect.iscoroutine(fn):
                fn.close()  # refused before it could run: no "never awaited" warning
            raise

    def _require(self) -> RunningSandbox:
        if self._running is None:
            raise RuntimeError("sandbox is not running")
        return self._running

    @property
    def world(self) -> World:
        """The world (touch it only through :meth:`run`)."""
        return self._require().world

    @property
    def state(self) -> SandboxState:
        """The shared REST state (rate limiter, faults, guard, gateway); use through :meth:`run`."""
        return self._require().state

    @property
    def port(self) -> int:
        """The bound port."""
        return self._require().port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self._require().base_url

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api/v10``."""
        return self._require().api_url

    @property
    def gateway_url(self) -> str:
        """``ws://127.0.0.1:PORT/ws``."""
        return self._require().gateway_url

    @property
    def cdn_url(self) -> str:
        """``http://127.0.0.1:PORT`` (MemberSense's ``DISCORD_CDN_BASE``)."""
        return self._require().cdn_url

    @property
    def tokens(self) -> list[str]:
        """The bot tokens."""
        return self._require().tokens

    @property
    def ready_line(self) -> str:
        """What the CLI prints once listening."""
        return self._require().ready_line()
