"""discord.py measures heartbeat latency against the sandbox as it does against Discord.

discord.py's keep-alive thread sends a heartbeat through the event loop, waits for the send
to finish, and only then records when it sent it; the loop thread, meanwhile, reads the ACK
and computes ``latency = ack_time - last_send``. Discord's ACK needs a network round trip,
so it always lands after that record. An ACK sent at once over loopback can land before it,
and discord.py then measures against the previous heartbeat: a whole interval "behind"
(``Can't keep up, shard ID None websocket is 41.3s behind`` at Discord's interval).
"""

from __future__ import annotations

import asyncio

import discord
from discord.gateway import KeepAliveHandler

from .conftest import TEST_TOKEN
from .gateway_support import run_client

INTERVAL_MS = 150
BEATS = 25


def test_discordpy_never_measures_an_ack_against_the_previous_heartbeat(sandbox_factory, point_discord,
                                                                        monkeypatch) -> None:
    server = sandbox_factory(members=5, channels=1, messages=0, heartbeat_interval_ms=INTERVAL_MS)
    point_discord(server)
    latencies: list[float] = []
    original_ack = KeepAliveHandler.ack

    def recording_ack(self: KeepAliveHandler) -> None:
        original_ack(self)
        latencies.append(self.latency)

    monkeypatch.setattr(KeepAliveHandler, "ack", recording_ack)
    client = discord.Client(intents=discord.Intents.all(), guild_ready_timeout=0.2)

    async def body() -> None:
        await client.wait_until_ready()
        while len(latencies) < BEATS:
            await asyncio.sleep(INTERVAL_MS / 1000)

    asyncio.run(run_client(client, TEST_TOKEN, body))
    # An ACK read before its heartbeat's send was recorded measures about one interval.
    behind = [latency for latency in latencies if latency > INTERVAL_MS / 1000 * 0.6]
    assert not behind, f"{len(behind)} of {len(latencies)} ACKs measured against the previous heartbeat: {behind}"
