"""Sending, editing and deleting messages through the discord.py service, in-process against
the sandbox: what reaches Discord (mentions, replies, nonces), and what is refused before it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from membersense.discord.errors import (
    ChannelNotFound,
    InvalidMessage,
    MessageNotFound,
    MissingAccess,
    NotMessageable,
    RateLimited,
)
from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer
from tests.inprocess import Bots, Session
from tests.integration.support import Control

WRITER = "writer-bot-token"
SCENARIO = {
    "seed": 5,
    "bots": [{"token": WRITER, "username": "Writer"}],
    "guilds": [
        {
            "name": "Post Office",
            "members": 20,
            "channels": 2,
            "messages": 5,
            "bots": [WRITER],
            "hidden_channels": ["staff-only"],
            "read_only_channels": ["news"],
            "named_members": [{"username": "alice", "roles": ["Moderator"]}],
        }
    ],
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    path: Path = tmp_path_factory.mktemp("sending") / "world.json"
    path.write_text(json.dumps(SCENARIO))
    server = SandboxServer(
        SandboxConfig(port=0, scenario=str(path), member_request_cooldown_s=0.5)
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bots(sandbox: SandboxServer) -> Iterator[Bots]:
    made = Bots(sandbox)
    yield made
    made.close()


@pytest.fixture(scope="module")
def writer(bots: Bots) -> Session:
    return bots.login(WRITER)


@pytest.fixture
def control(sandbox: SandboxServer) -> Iterator[Control]:
    client = Control(sandbox.base_url)
    yield client
    client.request("DELETE", "/faults")
    client.close()


def channel_id(session: Session, name: str, kind: str = "text") -> int:
    return int(next(c["id"] for c in session.channels(kind=kind) if c["name"] == name))


def general(session: Session) -> int:
    return int(next(c["id"] for c in session.channels() if c["name"] not in ("staff-only", "news")))


def stored(sandbox: SandboxServer, channel: int, message_id: str) -> dict[str, Any] | None:
    """The sandbox's own record of a message (None once deleted)."""

    def read() -> dict[str, Any] | None:
        found = sandbox.world.channel(channel).messages.get(int(message_id))
        if found is None:
            return None
        return {
            "content": found.content,
            "mentions": found.mention_ids,
            "roles": found.mention_role_ids,
            "everyone": found.mention_everyone,
            "nonce": found.nonce,
            "author": found.author.username,
        }

    return sandbox.run(read)


def send(session: Session, channel: int, content: str, **kwargs: Any) -> dict[str, Any]:
    return session.bots.discord.send_message(
        session.bot, int(session.record.guild_ids[0]), channel, content, **kwargs
    )


def alice(sandbox: SandboxServer) -> int:
    def find() -> int:
        guild = next(iter(sandbox.world.guilds.values()))
        return next(m.user.id for m in guild.members.values() if m.user.username == "alice")

    return sandbox.run(find)


def test_a_sent_message_is_in_discord_and_its_mentions_ping_no_one(
    writer: Session, sandbox: SandboxServer
) -> None:
    channel = general(writer)
    content = f"hi <@{alice(sandbox)}> and @everyone"
    sent = send(writer, channel, content)
    assert sent["content"] == content and sent["channelId"] == str(channel)
    assert set(sent) == set(writer.messages(channel, limit=1)[0])  # GET /api/messages' shape
    assert writer.messages(channel, limit=1)[0]["id"] == sent["id"]
    record = stored(sandbox, channel, sent["id"])
    assert record == {
        "content": content,
        "mentions": [],
        "roles": [],
        "everyone": False,
        "nonce": None,
        "author": "Writer",
    }


def test_allow_mentions_lets_discord_ping(writer: Session, sandbox: SandboxServer) -> None:
    channel = general(writer)
    sent = send(writer, channel, f"hi <@{alice(sandbox)}> @everyone", allow_mentions=True)
    record = stored(sandbox, channel, sent["id"])
    assert record is not None
    assert record["mentions"] == [alice(sandbox)] and record["everyone"] is True


def test_a_reply_names_its_message_and_does_not_ping_its_author(
    writer: Session, sandbox: SandboxServer
) -> None:
    channel = general(writer)
    target = next(
        m for m in writer.messages(channel, limit=10) if m["author"]["username"] != "Writer"
    )
    reply = send(writer, channel, "agreed", reply_to=int(target["id"]))
    assert reply["replyTo"] == target["id"]
    assert stored(sandbox, channel, reply["id"])["mentions"] == []
    with pytest.raises(InvalidMessage) as refused:
        send(writer, channel, "to nothing", reply_to=1)
    assert refused.value.message == "replyTo must be a message of this channel"


def test_an_idempotency_key_posts_once_per_channel(writer: Session, sandbox: SandboxServer) -> None:
    channel = general(writer)
    first = send(writer, channel, "pay the invoice", idempotency_key="invoice-17")
    again = send(writer, channel, "pay the invoice", idempotency_key="invoice-17")
    assert again["id"] == first["id"]
    recent = [m["id"] for m in writer.messages(channel, limit=20)]
    assert recent.count(first["id"]) == 1
    nonce = stored(sandbox, channel, first["id"])["nonce"]
    assert isinstance(nonce, str) and len(nonce) == 25
    second = next(
        int(c["id"])
        for c in writer.channels()
        if c["name"] not in ("staff-only", "news") and int(c["id"]) != channel
    )
    elsewhere = send(writer, second, "pay the invoice", idempotency_key="invoice-17")
    assert elsewhere["id"] != first["id"]


def test_what_published_state_refuses_never_reaches_discord(
    writer: Session, control: Control
) -> None:
    # Armed on every channel route: a call to Discord would spend it.
    control.request("POST", "/faults", status=500, count=1, path="/channels/*")
    with pytest.raises(MissingAccess) as no_send:
        send(writer, channel_id(writer, "news"), "hello")  # only moderators post there
    assert no_send.value.message == "The bot cannot send messages in this channel"
    with pytest.raises(ChannelNotFound):
        send(writer, 1, "hello")
    category = int(writer.channels(kind="category")[0]["id"])
    with pytest.raises(NotMessageable):
        send(writer, category, "hello")
    with pytest.raises(NotMessageable):
        writer.bots.discord.delete_message(writer.bot, int(writer.record.guild_ids[0]), category, 1)
    assert control.request("GET", "/faults")["faults"][0]["remaining"] == 1


def test_edit_and_delete_the_bots_own_messages_only(
    writer: Session, sandbox: SandboxServer
) -> None:
    discord, guild = writer.bots.discord, int(writer.record.guild_ids[0])
    channel = general(writer)
    sent = send(writer, channel, "draft")
    edited = discord.edit_message(writer.bot, guild, channel, int(sent["id"]), "final")
    assert edited["id"] == sent["id"] and edited["content"] == "final"
    assert edited["editedTimestamp"] is not None
    assert stored(sandbox, channel, sent["id"])["content"] == "final"
    someone_elses = next(
        m for m in writer.messages(channel, limit=50) if m["author"]["username"] != "Writer"
    )
    with pytest.raises(MissingAccess) as refused:
        discord.edit_message(writer.bot, guild, channel, int(someone_elses["id"]), "mine now")
    assert refused.value.message == "The bot can only edit its own messages"
    discord.delete_message(writer.bot, guild, channel, int(sent["id"]))
    assert stored(sandbox, channel, sent["id"]) is None
    with pytest.raises(MessageNotFound):
        discord.delete_message(writer.bot, guild, channel, int(sent["id"]))
    with pytest.raises(MessageNotFound):
        discord.edit_message(writer.bot, guild, channel, int(sent["id"]), "ghost")


def test_discord_rate_limiting_a_send_says_when_to_retry(writer: Session, control: Control) -> None:
    # Longer than DISCORD_TIMEOUT (3 s here): discord.py gives up rather than sleep.
    control.request(
        "POST", "/faults", status=429, count=1, path="/channels/*/messages", retry_after=60
    )
    with pytest.raises(RateLimited) as limited:
        send(writer, general(writer), "too soon")
    assert limited.value.retry_after is not None and limited.value.retry_after >= 30
