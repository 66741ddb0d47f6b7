"""``membersense sandbox ...``: run the Discord sandbox until SIGINT/SIGTERM.

Prints exactly one line once listening (``sandbox ready api=... gateway=... tokens=...``)
and flushes it, so scripts can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from membersense.sandbox.config import DEMO_TOKEN, SandboxConfig
from membersense.sandbox.scenario import ScenarioError


def _per_window(text: str) -> tuple[int, float]:
    """``"50/1"`` → (50, 1.0): requests per window seconds."""
    count, _, window = text.partition("/")
    try:
        limit, seconds = int(count), float(window or "1")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected COUNT/SECONDS, got {text!r}") from None
    if limit < 1 or seconds <= 0:
        raise argparse.ArgumentTypeError("COUNT and SECONDS must be positive")
    return limit, seconds


def _route_limit(text: str) -> tuple[str, tuple[int, float]]:
    """``"POST /channels/{channel_id}/messages=5/5"`` → (route key, (5, 5.0))."""
    route, sep, limit = text.rpartition("=")
    if not sep or " " not in route:
        raise argparse.ArgumentTypeError(
            f"expected 'METHOD /route/template=COUNT/SECONDS', got {text!r}"
        )
    return route.strip(), _per_window(limit)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``membersense sandbox``."""
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(
        prog="membersense sandbox",
        description="Run a local, wire-compatible Discord (REST v10 + gateway) with a generated world.",
    )
    world = parser.add_argument_group("world")
    world.add_argument(
        "--host", default=defaults.host, help="address to bind (default %(default)s)"
    )
    world.add_argument(
        "--port",
        type=int,
        default=defaults.port,
        help="port to bind, 0 for any (default %(default)s)",
    )
    world.add_argument(
        "--members",
        type=int,
        default=defaults.members,
        help="human members of the guild (default %(default)s); the bots join on top",
    )
    world.add_argument(
        "--channels",
        type=int,
        default=defaults.channels,
        help="text channels (default %(default)s), plus categories and 2 voice channels",
    )
    world.add_argument(
        "--messages",
        type=int,
        default=defaults.messages,
        help="messages of history per text channel (default %(default)s)",
    )
    world.add_argument(
        "--token",
        action="append",
        dest="tokens",
        default=[],
        metavar="TOKEN",
        help=f"a bot token (repeatable); each is a bot in the guild (default: {DEMO_TOKEN})",
    )
    world.add_argument(
        "--seed", type=int, default=defaults.seed, help="world seed (default %(default)s)"
    )
    world.add_argument(
        "--scenario", metavar="FILE.json", help="build the world from a scenario file instead"
    )
    gateway = parser.add_argument_group("gateway")
    gateway.add_argument(
        "--heartbeat-interval",
        type=int,
        default=defaults.heartbeat_interval_ms,
        metavar="MS",
        help="HELLO heartbeat_interval in ms (default %(default)s)",
    )
    gateway.add_argument(
        "--heartbeat-ack-delay",
        type=int,
        default=defaults.heartbeat_ack_delay_ms,
        metavar="MS",
        help="how long a heartbeat's ACK takes, as Discord's round trip (default %(default)s)",
    )
    gateway.add_argument(
        "--member-request-cooldown",
        type=float,
        default=defaults.member_request_cooldown_s,
        metavar="SECONDS",
        help="cooldown of full member requests per guild (default %(default)s)",
    )
    gateway.add_argument(
        "--session-start-limit",
        type=int,
        default=defaults.session_start_limit,
        metavar="N",
        help="IDENTIFYs per bot per day (default %(default)s)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--rate-limit",
        type=_per_window,
        metavar="COUNT/SECONDS",
        default=(defaults.rate_limit_per_route, defaults.rate_limit_window_s),
        help="per-route bucket size (default 50/1)",
    )
    limits.add_argument(
        "--route-limit",
        type=_route_limit,
        action="append",
        default=[],
        metavar="'METHOD /template=COUNT/SECONDS'",
        help="override one route's bucket, e.g. 'POST /channels/{channel_id}/messages=5/5'",
    )
    limits.add_argument(
        "--global-rate-limit",
        type=int,
        metavar="N",
        help="requests per second per bot across routes (default: off)",
    )
    limits.add_argument(
        "--invalid-request-limit",
        type=int,
        metavar="N",
        help="ban a client IP after N 401/403/429 answers in 10 minutes (default: off; Discord: 10000)",
    )
    limits.add_argument(
        "--invalid-request-ban",
        type=float,
        default=defaults.invalid_request_ban_s,
        metavar="SECONDS",
        help="how long such a ban lasts (default %(default)s)",
    )
    parser.add_argument(
        "--fd",
        type=int,
        metavar="FD",
        help="serve this inherited, bound socket instead of binding --host/--port "
        "(membersense demo binds its ports before starting anything)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log every HTTP request and the sandbox's INFO messages to stderr",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """The :class:`SandboxConfig` the parsed arguments describe."""
    return SandboxConfig(
        host=args.host,
        port=args.port,
        tokens=tuple(args.tokens),
        members=args.members,
        channels=args.channels,
        messages=args.messages,
        seed=args.seed,
        scenario=args.scenario,
        heartbeat_interval_ms=args.heartbeat_interval,
        heartbeat_ack_delay_ms=args.heartbeat_ack_delay,
        member_request_cooldown_s=args.member_request_cooldown,
        session_start_limit=args.session_start_limit,
        rate_limit_per_route=args.rate_limit[0],
        rate_limit_window_s=args.rate_limit[1],
        route_limits=dict(args.route_limit),
        global_rate_limit=args.global_rate_limit,
        invalid_request_limit=args.invalid_request_limit,
        invalid_request_ban_s=args.invalid_request_ban,
    )


async def serve(config: SandboxConfig, *, access_log: bool = False, fd: int | None = None) -> None:
    """Serve until SIGINT or SIGTERM, printing the ready line once listening."""
    from membersense.sandbox.server import start_sandbox  # aiohttp only once we really serve

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        sock = None if fd is None else socket.socket(fileno=fd)
        running = await start_sandbox(config, access_log=access_log, sock=sock)
        try:
            print(running.ready_line(), flush=True)
            await stop.wait()
        finally:
            await running.stop()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``membersense sandbox ARGS`` and ``python -m membersense.sandbox``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(config, access_log=args.verbose, fd=args.fd))
    except ScenarioError as exc:
        print(f"membersense sandbox: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"membersense sandbox: error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # no signal handlers on this platform
        pass
    return 0
