"""How long unmodified discord.py takes to chunk a 10 000-member sandbox guild.

    .venv/bin/python benchmarks/sandbox_chunking.py [--members 10000] [--runs 7] [--mode process|thread]

Each run starts a fresh ``discord.Client(intents=Intents.all())`` against one sandbox and
measures from ``client.start()`` until its guild is fully chunked (``guild.chunked``:
every member cached).  That covers discord.py's REST login, the websocket handshake,
HELLO / IDENTIFY / READY / GUILD_CREATE, the REQUEST_GUILD_MEMBERS discord.py sends, the
sandbox building and zlib-compressing the GUILD_MEMBERS_CHUNKs, and discord.py inflating
and parsing them into ``Member`` objects.  ``on_ready`` comes later because discord.py
itself waits ``guild_ready_timeout`` (2 s) for further GUILD_CREATEs; it is printed too.

``--mode process`` (default) runs the sandbox as ``python -m membersense.sandbox`` in a
child process, as a user runs it; ``--mode thread`` runs it in-process on a
:class:`SandboxServer` thread, as the tests do (both then share one GIL).  The sandbox's
30 s cooldown on "all members" requests is set to 0 so every run may chunk again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import discord
import yarl

TARGET_S = 2.0
TOKEN = "benchmark-token"


@contextmanager
def sandbox(mode: str, members: int) -> Iterator[tuple[str, str]]:
    """A running sandbox with one guild of ``members`` humans; yields (api_url, gateway_url)."""
    if mode == "thread":
        from membersense.sandbox.server import SandboxServer

        with SandboxServer(
            port=0,
            members=members,
            channels=1,
            messages=0,
            tokens=(TOKEN,),
            member_request_cooldown_s=0.0,
        ) as server:
            yield server.api_url, server.gateway_url
        return
    args = [
        sys.executable,
        "-m",
        "membersense.sandbox",
        "--port",
        "0",
        "--members",
        str(members),
        "--channels",
        "1",
        "--messages",
        "0",
        "--token",
        TOKEN,
        "--member-request-cooldown",
        "0",
    ]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # "sandbox ready api=... gateway=... tokens=..."
        if not line.startswith("sandbox ready"):
            raise RuntimeError(f"sandbox did not start: {line!r}")
        fields = dict(part.split("=", 1) for part in line.split()[2:])
        yield fields["api"], fields["gateway"]
    finally:
        child.terminate()
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()


async def one_run() -> tuple[float, float, int]:
    """(seconds to chunked, seconds to on_ready, members cached) for one fresh client."""
    client = discord.Client(intents=discord.Intents.all())
    chunked = asyncio.get_running_loop().create_future()

    async def watch() -> None:
        while True:
            guild = client.guilds[0] if client.guilds else None
            if guild is not None and guild.chunked:
                chunked.set_result((time.perf_counter(), len(guild.members)))
                return
            await asyncio.sleep(0.001)

    async def setup_hook() -> None:
        asyncio.get_running_loop().create_task(watch())

    client.setup_hook = setup_hook  # type: ignore[method-assign]
    started = time.perf_counter()
    runner = asyncio.create_task(client.start(TOKEN))
    try:
        done_at, cached = await asyncio.wait_for(chunked, 60)
        await asyncio.wait_for(client.wait_until_ready(), 60)
        ready_at = time.perf_counter()
    finally:
        await client.close()
        await asyncio.gather(runner, return_exceptions=True)
    return done_at - started, ready_at - started, cached


def describe(values: list[float]) -> str:
    """``median X s (min Y, max Z)``."""
    return (
        f"median {statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its numbers; exit status 1 when the median misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--members", type=int, default=10_000, help="human members (the bot adds one)"
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mode", choices=("process", "thread"), default="process")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.members < 0:
        parser.error("--runs must be >= 1 and --members >= 0")
    logging.getLogger("discord").setLevel(logging.ERROR)  # no "PyNaCl is not installed" noise

    chunk_times: list[float] = []
    ready_times: list[float] = []
    cached = 0
    with sandbox(args.mode, args.members) as (api_url, gateway_url):
        discord.http.Route.BASE = api_url
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
        for _ in range(args.runs):
            chunk_s, ready_s, cached = asyncio.run(one_run())
            chunk_times.append(chunk_s)
            ready_times.append(ready_s)

    print(
        f"sandbox chunking: discord.py {discord.__version__}, guild of {cached} members, {args.runs} runs, "
        f"sandbox in a {args.mode}"
    )
    print(
        f"  start -> guild chunked: {describe(chunk_times)}  target < {TARGET_S:.1f} s: "
        f"{'met' if statistics.median(chunk_times) < TARGET_S else 'MISSED'}"
    )
    print(
        f"  start -> on_ready:      {describe(ready_times)}  (includes discord.py's guild_ready_timeout of 2 s)"
    )
    return 0 if statistics.median(chunk_times) < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
