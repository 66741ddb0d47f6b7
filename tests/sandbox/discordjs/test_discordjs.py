"""Unmodified discord.js 14 against the sandbox: ``npm ci`` installs the pinned version
into this folder, then ``check.mjs`` logs in, fetches members over the gateway,
channels and messages over REST, posts a message and sees its MESSAGE_CREATE.

Needs node and npm (skipped, visibly, when either is missing); deselect with ``-m "not node"``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import TEST_TOKEN

pytestmark = pytest.mark.node

HERE = Path(__file__).resolve().parent


def _pinned_version() -> str:
    return json.loads((HERE / "package.json").read_text())["dependencies"]["discord.js"]


def _installed_version() -> str | None:
    manifest = HERE / "node_modules" / "discord.js" / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


@pytest.fixture(scope="module")
def node_project() -> Path:
    """The folder with discord.js installed (``npm ci`` when it is missing or not the pinned version)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the discord.js check")
    if _installed_version() != _pinned_version():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True,
                       timeout=300, capture_output=True)
    assert _installed_version() == _pinned_version()
    return HERE


def test_discordjs_logs_in_and_reads_members_channels_messages(node_project, sandbox_factory):
    server = sandbox_factory(members=300, channels=3, messages=30)

    def facts():
        world = server.world
        bot = world.bot_for_token(TEST_TOKEN)
        guild = world.guilds_of(bot)[0]
        text = min((c for c in guild.channels if c.type == 0), key=lambda c: c.position)
        newest = text.messages[text.message_ids[-1]]
        return bot.id, guild.id, guild.member_count, len(guild.channels), text.id, newest.id, newest.content

    bot_id, guild_id, member_count, channel_count, text_id, newest_id, newest_content = server.run(facts)
    done = subprocess.run([shutil.which("node"), "check.mjs", server.base_url, TEST_TOKEN], cwd=node_project,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["user"] == {"id": str(bot_id), "username": seen["user"]["username"], "bot": True}
    assert seen["guilds"] == [str(guild_id)]
    assert seen["guild"]["memberCount"] == member_count == 301 and seen["guild"]["large"] is True
    assert seen["membersFetched"] == member_count  # every member, over REQUEST_GUILD_MEMBERS
    assert seen["rateLimited"]["name"] == "GatewayRateLimitError"  # the second fetch within 30 s
    assert 0 < seen["rateLimited"]["retryAfter"] <= 30
    assert seen["channels"] == channel_count
    assert seen["textChannel"]["id"] == str(text_id)
    assert seen["messages"] == 20
    assert seen["newestMessage"] == {"id": str(newest_id), "content": newest_content}
    assert seen["sent"]["content"] == "hello from discord.js"
    assert seen["dispatched"] == {"id": seen["sent"]["id"], "content": "hello from discord.js",
                                  "channelId": str(text_id)}
