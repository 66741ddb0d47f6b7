"""``membersense demo``: the sandbox Discord and MemberSense, wired together.

Binds both ports first (a taken port stops the demo with one line saying which, before
anything starts), then starts the sandbox (a local Discord emulator) and the API server
as child processes on those very sockets, points the server at the sandbox through
``DISCORD_API_BASE``, ``DISCORD_GATEWAY_URL`` and ``DISCORD_CDN_BASE``, and only once
the server answers prints where everything is, with ready-to-paste curl commands. Ctrl-C
or SIGTERM stops both, the API server first, so its Discord connections close cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import IO, Any

__all__ = ["main"]

READY_PREFIX = "sandbox ready "
#: The demo's world (the sandbox's seed 0): the README's example ids come from it.
WORLD = {"members": 1000, "channels": 10, "messages": 200}
#: The demo world's channel the banner's examples read, when it has one.
EXAMPLE_CHANNEL = "general"


class DemoError(RuntimeError):
    """The demo cannot start; the message is the one line the user sees."""


def _parse_ready_line(line: str) -> dict[str, str]:
    fields = dict(part.split("=", 1) for part in line[len(READY_PREFIX) :].split() if "=" in part)
    for key in ("api", "gateway", "cdn", "tokens"):
        if key not in fields:
            raise DemoError(f"the sandbox's ready line lacks {key}=: {line.strip()!r}")
    return fields


def _bind(host: str, port: int, what: str, variable: str) -> socket.socket:
    """A listening socket on *host*:*port*, or a :class:`DemoError` naming the setting to change."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise DemoError(f"cannot use host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # Not SO_REUSEPORT: a port another server listens on must stay refused.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise DemoError(
            f"the {what} port {port} on {host} is not available ({exc.strerror or exc}); "
            f"choose another with {variable}=..., e.g. make demo {variable}={port + 1}"
        ) from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _forward(stream: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(line)


def _start_sandbox(
    args: argparse.Namespace, sock: socket.socket
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    command = [
        sys.executable,
        "-m",
        "membersense.sandbox",
        "--fd",
        str(sock.fileno()),
        "--members",
        str(args.members),
        "--channels",
        str(args.channels),
        "--messages",
        str(args.messages),
    ]
    # A session of its own: Ctrl-C reaches the demo only, which stops the children in order.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        pass_fds=(sock.fileno(),),
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + args.startup_timeout
    for line in process.stdout:
        if line.startswith(READY_PREFIX):
            ready = _parse_ready_line(line)
            # Keep draining its stdout so it can never block on a full pipe.
            threading.Thread(
                target=_forward, args=(process.stdout,), name="sandbox-stdout", daemon=True
            ).start()
            return process, ready
        sys.stdout.write(line)
        if time.monotonic() > deadline:
            break
    process.kill()
    process.wait()
    raise DemoError("the sandbox did not start (see the lines above)")


def _wait_healthy(
    url: str, process: subprocess.Popen[bytes], timeout: float, stopping: threading.Event
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping.is_set():
        if process.poll() is not None:
            raise DemoError(
                f"the API server exited with {process.returncode} (see the lines above)"
            )
        try:
            with urllib.request.urlopen(f"{url}/_ah/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    if not stopping.is_set():
        raise DemoError("the API server did not become healthy in time")


def _sandbox_get(api: str, token: str, path: str) -> Any:
    request = urllib.request.Request(f"{api}{path}", headers={"Authorization": f"Bot {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _example_channel(api: str, token: str) -> dict[str, str] | None:
    """A text channel of the bot's first guild (#general if it has one), from the sandbox."""
    try:
        guilds = _sandbox_get(api, token, "/users/@me/guilds")
        if not guilds:
            return None
        channels = _sandbox_get(api, token, f"/guilds/{guilds[0]['id']}/channels")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    text = [c for c in channels if c.get("type") == 0]
    chosen = next((c for c in text if c.get("name") == EXAMPLE_CHANNEL), text[0] if text else None)
    return None if chosen is None else {"id": str(chosen["id"]), "name": str(chosen["name"])}


def _banner(api_url: str, sandbox_url: str, token: str, channel: dict[str, str] | None) -> str:
    login_body = shlex.quote(json.dumps({"token": token}))
    session = (
        f"SESSION=$(curl -s -X POST {api_url}/api/auth/login "
        f"-H 'Content-Type: application/json' -d {login_body} "
        "| python3 -c 'import json, sys; print(json.load(sys.stdin)[\"sessionId\"])')"
    )
    lines = [
        "",
        "MemberSense demo is running (Ctrl-C stops it).",
        f"  API        {api_url}",
        f"  Dashboard  {api_url}/",
        (
            f"  Sandbox    {sandbox_url}   (its Discord API: {sandbox_url}/api/v10, "
            f"control API: {sandbox_url}/_sandbox/state)"
        ),
        f"  Bot token  {token}   (a sandbox-only token)",
    ]
    if channel is not None:
        lines.append(f"  Channel    #{channel['name']} {channel['id']}")
    lines += [
        "",
        "Open the dashboard and log in with the token, or paste into a shell:",
        f"  {session}",
        f"  curl -s '{api_url}/api/members?limit=5' -H \"Authorization: $SESSION\"",
    ]
    if channel is not None:
        lines.append(
            f"  curl -s '{api_url}/api/messages?channelId={channel['id']}&limit=5' "
            '-H "Authorization: $SESSION"'
        )
    lines.append("")
    return "\n".join(lines)


def _stop(children: list[subprocess.Popen[Any]]) -> None:
    # The API server first: it closes its Discord connections while the sandbox still answers.
    for child in children:
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise DemoError(f"{name} must be a TCP port between 0 and 65535, got {raw!r}")
    return int(raw)


def main(argv: list[str] | None = None) -> int:
    """Run the demo until interrupted; return the exit code."""
    try:
        return _run(argv)
    except DemoError as exc:
        print(f"membersense demo: {exc}", file=sys.stderr, flush=True)
        return 1


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="membersense demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address of both servers")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="API and dashboard port (default: PORT or 8080; 0 picks a free one)",
    )
    parser.add_argument(
        "--sandbox-port",
        type=int,
        default=None,
        help="sandbox port (default: SANDBOX_PORT or 8765; 0 picks a free one)",
    )
    parser.add_argument("--members", type=int, default=WORLD["members"])
    parser.add_argument("--channels", type=int, default=WORLD["channels"])
    parser.add_argument("--messages", type=int, default=WORLD["messages"])
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    api_port = args.port if args.port is not None else _env_port("PORT", 8080)
    sandbox_port = (
        args.sandbox_port if args.sandbox_port is not None else _env_port("SANDBOX_PORT", 8765)
    )

    api_sock = _bind(args.host, api_port, "API", "PORT")
    try:
        sandbox_sock = _bind(args.host, sandbox_port, "sandbox", "SANDBOX_PORT")
    except DemoError:
        api_sock.close()
        raise

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[subprocess.Popen[Any]] = []
    try:
        with sandbox_sock:
            sandbox, ready = _start_sandbox(args, sandbox_sock)
        children.append(sandbox)
        env = {
            **os.environ,
            "DISCORD_API_BASE": ready["api"],
            "DISCORD_GATEWAY_URL": ready["gateway"],
            "DISCORD_CDN_BASE": ready["cdn"],
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"),
        }
        with api_sock:
            server = subprocess.Popen(
                [sys.executable, "-m", "membersense", "serve", "--fd", str(api_sock.fileno())],
                env=env,
                pass_fds=(api_sock.fileno(),),
                start_new_session=True,
            )
            api_port = api_sock.getsockname()[1]
        children.insert(0, server)
        api_url = f"http://{_url_host(args.host)}:{api_port}"
        _wait_healthy(api_url, server, args.startup_timeout, stopping)
        if stopping.is_set():
            return 0
        token = ready["tokens"].split(",")[0]
        sandbox_url = ready["api"].rsplit("/api/", 1)[0]
        channel = _example_channel(ready["api"], token)
        print(_banner(api_url, sandbox_url, token, channel), flush=True)
        while not stopping.wait(0.5):
            if any(child.poll() is not None for child in children):
                print("membersense demo: a child process exited; stopping", file=sys.stderr)
                return 1
        return 0
    finally:
        _stop(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
