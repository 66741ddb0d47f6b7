"""What a DEBUG log under gunicorn holds: discord.py's chatter, never its payloads."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.conftest import MemberSense
from tests.integration.support import log_records, wait_until


def _plain(text: str) -> bool:
    # Text a JSON log line would carry as it is (no escapes), long enough to be unique.
    return len(text) >= 8 and text.isascii() and not any(c in text for c in '"\\')


def test_member_lists_and_message_contents_stay_out_of_a_debug_log(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    server = membersense_factory(LOG_LEVEL="DEBUG")
    api = server.api
    assert api is not None
    session = api.login()
    members = api.get("/api/members", session).json()
    channel = api.get("/api/channels", session).json()[0]["id"]
    messages = api.get("/api/messages", session, channelId=channel).json()
    api.logout(session)
    wait_until(lambda: "session closed" in server.server.log(), what="the logout to be logged")
    log = server.server.log()
    assert any(
        record["severity"] == "DEBUG" and record["logger"] == "discord.gateway"
        for record in log_records(log)
    )
    assert "[payload omitted]" in log  # what stood where the payloads were
    names = [m["username"] for m in members if _plain(m["username"])]
    contents = [m["content"] for m in messages if _plain(m["content"])]
    assert len(names) > 100 and len(contents) > 10  # the check below means something
    assert [name for name in names if name in log] == []
    assert [content for content in contents if content in log] == []
