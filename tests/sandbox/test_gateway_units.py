"""Unit tests of the gateway's pure helpers: message-content stripping, the replay
buffer, the member-request cooldown and the zlib-stream encoder."""

from __future__ import annotations

import json
import zlib

import pytest

from membersense.sandbox import gateway_session
from membersense.sandbox.gateway_members import MemberRequestCooldown
from membersense.sandbox.gateway_protocol import (
    PlainEncoder,
    ZlibStreamEncoder,
    control_frame,
    dispatch_frame,
    encoder_for,
    parse_snowflake,
    strip_message_content,
    valid_nonce,
)
from membersense.sandbox.gateway_session import Session, SessionRegistry
from membersense.sandbox.models import Bot, User
from tests.fakes import FakeClock

BOT_ID = 42


def _message(**changes):
    message = {
        "id": "1",
        "channel_id": "2",
        "guild_id": "3",
        "author": {"id": "7"},
        "content": "secret",
        "embeds": [{"title": "e"}],
        "attachments": [{"id": "9"}],
        "components": [{"type": 1}],
        "poll": {"question": {"text": "?"}},
        "mentions": [],
    }
    message.update(changes)
    return message


def test_strip_message_content_empties_guarded_fields():
    stripped = strip_message_content(_message(), BOT_ID)
    assert stripped["content"] == "" and stripped["embeds"] == [] and stripped["attachments"] == []
    assert stripped["components"] == [] and "poll" not in stripped
    assert stripped["id"] == "1" and stripped["author"] == {"id": "7"}


@pytest.mark.parametrize(
    "changes",
    [
        {"author": {"id": str(BOT_ID)}},
        {"mentions": [{"id": "8"}, {"id": str(BOT_ID)}]},
    ],
    ids=["own-message", "mentioned"],
)
def test_strip_message_content_keeps_what_discord_keeps(changes):
    message = _message(**changes)
    assert strip_message_content(message, BOT_ID) is message


def test_strip_message_content_keeps_dms():
    dm = _message(referenced_message=_message())
    del dm["guild_id"]
    assert strip_message_content(dm, BOT_ID) is dm


def test_strip_message_content_judges_a_quoted_message_on_its_own():
    # Quoted messages carry no guild_id: the parent's guild applies to them.
    quoted = _message(content="quoted")
    del quoted["guild_id"]
    own_reply = strip_message_content(
        _message(author={"id": str(BOT_ID)}, referenced_message=quoted), BOT_ID
    )
    assert own_reply["content"] == "secret" and own_reply["referenced_message"]["content"] == ""

    own_quoted = _message(author={"id": str(BOT_ID)}, content="mine")
    del own_quoted["guild_id"]
    reply_to_bot = strip_message_content(_message(referenced_message=own_quoted), BOT_ID)
    assert reply_to_bot["content"] == "" and reply_to_bot["referenced_message"]["content"] == "mine"
    assert (
        strip_message_content(_message(referenced_message=None), BOT_ID)["referenced_message"]
        is None
    )


def test_frames_and_small_parsers():
    assert json.loads(control_frame(11)) == {"t": None, "s": None, "op": 11, "d": None}
    assert json.loads(dispatch_frame("READY", 3, '{"a":1}')) == {
        "t": "READY",
        "s": 3,
        "op": 0,
        "d": {"a": 1},
    }
    assert parse_snowflake("123") == 123 and parse_snowflake(5) == 5
    assert (
        parse_snowflake(True) is None
        and parse_snowflake("-1") is None
        and parse_snowflake(-3) is None
    )
    assert (
        valid_nonce("a" * 32) == "a" * 32
        and valid_nonce("é" * 17) is None
        and valid_nonce(5) is None
    )
    assert isinstance(encoder_for(None), PlainEncoder) and encoder_for("brotli") is None


def test_zlib_stream_encoder_keeps_one_context():
    encoder = ZlibStreamEncoder()
    inflater = zlib.decompressobj()
    for text in ('{"op":10}', '{"op":11}' * 100, "é" * 1000):
        data = encoder.encode(text)
        assert data.endswith(b"\x00\x00\xff\xff")
        assert inflater.decompress(data).decode() == text


def _session() -> Session:
    bot = Bot(
        token="t", user=User(id=BOT_ID, username="bot", bot=True), application_id=1, owner_id=2
    )
    return Session(bot, intents=1, shard=None, large_threshold=50)


def test_replay_buffer_returns_frames_after_a_seq_and_forgets_old_ones(monkeypatch):
    monkeypatch.setattr(gateway_session, "REPLAY_MAX_FRAMES", 5)
    session = _session()
    for i in range(8):
        session.next_frame("X", str(i))
    assert session.seq == 8
    assert [json.loads(f)["s"] for f in session.frames_after(5)] == [6, 7, 8]
    assert [json.loads(f)["s"] for f in session.frames_after(3)] == [4, 5, 6, 7, 8]
    assert session.frames_after(2) is None  # frame 3 was dropped
    assert session.frames_after(8) == []


def test_sessions_expire_only_while_detached():
    clock = FakeClock()
    registry = SessionRegistry(clock)
    session = _session()
    registry.add(session)
    clock.advance(10 * gateway_session.RESUME_WINDOW_S)
    assert registry.get(session.session_id) is session  # attached: never expires
    registry.detach(session)
    clock.advance(gateway_session.RESUME_WINDOW_S)
    assert registry.get(session.session_id) is session
    clock.advance(1)
    assert registry.get(session.session_id) is None and len(registry) == 0
    assert registry.get(None) is None


def test_member_request_cooldown():
    clock = FakeClock()
    cooldown = MemberRequestCooldown(clock, 30.0)
    bot, other = (
        _session().bot,
        Bot(token="u", user=User(id=43, username="b2", bot=True), application_id=2, owner_id=2),
    )
    assert cooldown.try_acquire(bot, 1) == 0.0
    clock.advance(10)
    assert cooldown.try_acquire(bot, 1) == pytest.approx(20.0)
    assert cooldown.try_acquire(bot, 2) == 0.0 and cooldown.try_acquire(other, 1) == 0.0
    clock.advance(20)
    assert cooldown.try_acquire(bot, 1) == 0.0
