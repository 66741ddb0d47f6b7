"""``membersense demo``: the sandbox Discord and MemberSense, wired together.

Starts the sandbox (a local Discord emulator) and the API server as child
processes, points the server at the sandbox through ``DISCORD_API_BASE`` and
``DISCORD_GATEWAY_URL``, prints where everything is and a ready-to-paste
login, and stops both on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import IO

__all__ = ["main"]

READY_PREFIX = "sandbox ready "


def _parse_ready_line(line: str) -> dict[str, str]:
    fields = dict(part.split("=", 1) for part in line[len(READY_PREFIX):].split() if "=" in part)
    for key in ("api", "gateway", "tokens"):
        if key not in fields:
            raise RuntimeError(f"the sandbox's ready line lacks {key}=: {line.strip()!r}")
    return fields


def _forward(stream: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(line)


def _start_sandbox(args: argparse.Namespace) -> tuple[subprocess.Popen[str], dict[str, str]]:
    command = [
        sys.executable, "-m", "membersense.sandbox",
        "--host", args.host, "--port", str(args.sandbox_port),
        "--members", str(args.members), "--channels", str(args.channels),
        "--messages", str(args.messages),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert process.stdout is not None
    deadline = time.monotonic() + args.startup_timeout
    for line in process.stdout:
        if line.startswith(READY_PREFIX):
            ready = _parse_ready_line(line)
            # Keep draining its stdout so it can never block on a full pipe.
            threading.Thread(target=_forward, args=(process.stdout,), name="sandbox-stdout",
                             daemon=True).start()
            return process, ready
        sys.stdout.write(line)
        if time.monotonic() > deadline:
            break
    process.kill()
    process.wait()
    raise RuntimeError("the sandbox did not start")


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_ah/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError("the API server did not become healthy")


def _banner(api_url: str, token: str) -> str:
    login = (f"curl -s -X POST {api_url}/api/auth/login "
             f"-H 'Content-Type: application/json' -d '{{\"token\": \"{token}\"}}'")
    return "\n".join([
        "",
        "MemberSense demo is running (Ctrl-C stops it).",
        f"  API        {api_url}",
        f"  Dashboard  {api_url}/",
        f"  Bot token  {token}   (a sandbox-only token)",
        "",
        "Log in:",
        f"  {login}",
        "Then, with the sessionId it returns:",
        f"  curl -s {api_url}/api/members -H 'Authorization: <sessionId>'",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    """Run the demo until interrupted; return the exit code."""
    parser = argparse.ArgumentParser(prog="membersense demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address of both servers")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")),
                        help="API port (default: PORT or 8080)")
    parser.add_argument("--sandbox-port", type=int, default=8765,
                        help="sandbox port (default 8765; 0 picks a free one)")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    sandbox, ready = _start_sandbox(args)
    server: subprocess.Popen[bytes] | None = None
    try:
        env = {
            **os.environ,
            "DISCORD_API_BASE": ready["api"],
            "DISCORD_GATEWAY_URL": ready["gateway"],
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "membersense", "serve", "--host", args.host,
             "--port", str(args.port)],
            env=env,
        )
        api_url = f"http://{args.host}:{args.port}"
        _wait_healthy(api_url, server, args.startup_timeout)
        print(_banner(api_url, ready["tokens"].split(",")[0]), flush=True)
        while not stopping.wait(0.5):
            if sandbox.poll() is not None or server.poll() is not None:
                print("membersense demo: a child process exited; stopping", file=sys.stderr)
                return 1
        return 0
    finally:
        for child in (server, sandbox):
            if child is not None and child.poll() is None:
                child.terminate()
        for child in (server, sandbox):
            if child is not None:
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
