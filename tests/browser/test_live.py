"""The dashboard as a companion app, in Chromium against gunicorn + the sandbox: sending
through ``POST /api/messages`` and live updates through ``/api/events``.

The module's MemberSense ends each event stream after :data:`STREAM_SECONDS`, so every
test here also lives through the page reconnecting (a new one-time ticket each time);
changes are made in "Discord" through the sandbox's control API, never by reloading.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer
from tests.integration.support import Control
from tests.servers import GunicornServer

from .conftest import TOKEN
from .support import FAILED_LOAD, XSS, Watch, live, log_in, open_channel, readable

#: EVENT_STREAM_MAX_SECONDS of this module's server: streams end (and the page reopens
#: them) every few seconds instead of every 270.
STREAM_SECONDS = 3
BOT_NAME = "Dashboard Bot"
#: A world with a channel where the bot may read but not post.
SCENARIO = {
    "seed": 0,
    "bots": [{"token": TOKEN, "username": BOT_NAME}],
    "guilds": [
        {
            "name": "MemberSense Sandbox",
            "members": 150,
            "channels": 4,
            "messages": 60,
            "read_only_channels": ["staff-news"],
        }
    ],
}

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}x{time.time_ns() % 10**8}"


@pytest.fixture(scope="module")
def sandbox_config(tmp_path_factory: pytest.TempPathFactory) -> SandboxConfig:
    path = tmp_path_factory.mktemp("world") / "world.json"
    path.write_text(json.dumps(SCENARIO))
    return SandboxConfig(port=0, scenario=str(path), member_request_cooldown_s=0.5)


@pytest.fixture(scope="module")
def app_env() -> dict[str, str]:
    return {"EVENT_STREAM_MAX_SECONDS": str(STREAM_SECONDS)}


@pytest.fixture(scope="module")
def control(sandbox: SandboxServer) -> Iterator[Control]:
    client = Control(sandbox.base_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def world(app_url: str, control: Control) -> Iterator[dict[str, Any]]:
    """Ids to act on, and a session of this test process (kept for the module: the pages'
    logins share its gateway connection)."""
    http = requests.Session()
    session = http.post(f"{app_url}/api/auth/login", json={"token": TOKEN}, timeout=60).json()[
        "sessionId"
    ]
    auth = {"Authorization": session}
    members = http.get(f"{app_url}/api/members", headers=auth, timeout=30).json()
    channels = http.get(f"{app_url}/api/channels", headers=auth, timeout=30).json()
    yield {
        "session": session,
        "http": http,
        "guild": control.guild_id("MemberSense Sandbox"),
        "general": next(c["id"] for c in channels if c["name"] == "general"),
        "read_only": next(c["id"] for c in channels if c["name"] == "staff-news"),
        "author": next(m["id"] for m in members if not m["bot"]),
    }
    http.post(f"{app_url}/api/auth/logout", headers=auth, timeout=30)
    http.close()


def sandbox_messages(sandbox: SandboxServer, channel: str) -> list[dict[str, Any]]:
    """The channel's messages as Discord (the sandbox) holds them, oldest first."""

    def read() -> list[dict[str, Any]]:
        found = sandbox.world.channel(int(channel))
        assert found is not None
        return [
            {"id": str(m.id), "content": m.content, "nonce": m.nonce, "author": m.author.username}
            for m in (found.messages[i] for i in found.message_ids)
        ]

    return sandbox.run(read)


def post(control: Control, world: dict[str, Any], channel: str, content: str) -> str:
    """A member posts in *channel* (in Discord); the message id."""
    return control.request(
        "POST", f"/channels/{channel}/messages", author_id=world["author"], content=content
    )["id"]


def shown(page: Any, text: str) -> int:
    """How many messages on the page read *text*."""
    return page.evaluate(
        "(t) => [...document.querySelectorAll('#message-list .text')].filter(n => n.textContent === t).length",
        text,
    )


def wait_shown(page: Any, text: str) -> None:
    page.wait_for_function(
        "(t) => [...document.querySelectorAll('#message-list .text')].some(n => n.textContent === t)",
        arg=text,
    )


def member_count(page: Any) -> int:
    return int(page.text_content("#member-count").split()[0].replace(",", ""))


def stream_urls(watch: Watch) -> list[dict[str, list[str]]]:
    """The query of every event stream the page opened, in order."""
    return [parse_qs(urlsplit(r.url).query) for r in watch.api_requests("GET", "/api/events")]


def test_a_message_sent_from_the_dashboard_is_posted_once_and_shown_once(
    context: Any,
    app_url: str,
    world: dict[str, Any],
    sandbox: SandboxServer,
    control: Control,
    artifacts: Path,
) -> None:
    page = context.new_page()
    watch = Watch(page)
    log_in(page, app_url)
    open_channel(page, world["general"])
    live(page)
    text = f"{unique('hello from the dashboard ')} <b>not bold</b> @everyone"
    page.fill("#send-text", text)
    page.press("#send-text", "Enter")  # Enter sends
    wait_shown(page, text)
    assert page.input_value("#send-text") == ""
    assert page.text_content("#send-error") == ""
    # In Discord once, by the bot, with the Idempotency-Key's nonce.
    posted = [m for m in sandbox_messages(sandbox, world["general"]) if m["content"] == text]
    assert len(posted) == 1 and posted[0]["author"] == BOT_NAME and posted[0]["nonce"]
    sends = watch.api_requests("POST", "/api/messages")
    assert len(sends) == 1 and sends[0].headers["idempotency-key"].startswith("dashboard-")
    assert json.loads(sends[0].post_data) == {"channelId": world["general"], "content": text}
    # The stream's message.create of it came too: events arrive in order, so once a later
    # message is on the page, so has that event been; the message is still shown once.
    later = post(control, world, world["general"], unique("after the dashboard's "))
    page.wait_for_selector(f"#message-{later}")
    assert shown(page, text) == 1
    assert page.locator(f"#message-{posted[0]['id']}").count() == 1
    page.screenshot(path=str(artifacts / "messages-sent.png"))
    page.click("#logout")
    watch.assert_clean()


def test_members_messages_and_channels_change_live_without_a_reload(
    context: Any, app_url: str, world: dict[str, Any], control: Control, artifacts: Path
) -> None:
    page = context.new_page()
    watch = Watch(page)
    log_in(page, app_url)
    live(page)
    page.evaluate("window.sameDocument = true")  # gone if anything reloaded the page
    before = member_count(page)

    # A member joins, changes name, leaves: the count, the list and its search follow.
    username = unique("newbie")
    joined = control.request(
        "POST",
        f"/guilds/{world['guild']}/members",
        username=username,
        global_name="Newbie Live",
        roles=["Gamer"],
    )
    member_id = joined["user"]["id"]
    page.wait_for_function(
        f"() => document.querySelector('#member-count').textContent === '{before + 1} members'"
    )
    page.wait_for_function(
        "(n) => document.querySelector('#members-status').textContent === `${n} of ${n} members`",
        arg=before + 1,
    )
    page.fill("#member-search", username)
    page.wait_for_selector(f"#member-list li[data-member-id='{member_id}']")
    assert (
        page.text_content(f"#member-list li[data-member-id='{member_id}'] strong") == "Newbie Live"
    )
    control.request("PATCH", f"/guilds/{world['guild']}/members/{member_id}", nick="Renamed Live")
    page.wait_for_function(
        f"() => document.querySelector(\"#member-list li[data-member-id='{member_id}'] strong\")?.textContent === 'Renamed Live'"
    )
    control.request("DELETE", f"/guilds/{world['guild']}/members/{member_id}")
    page.wait_for_function(
        "() => document.querySelector('#members-status').textContent === "
        "'No member matches the search and role filter.'"
    )
    assert member_count(page) == before
    page.fill("#member-search", "")

    # A message arrives in the open channel, as text (its HTML is not run), is edited, deleted.
    open_channel(page, world["general"])
    message = post(control, world, world["general"], XSS)
    page.wait_for_selector(f"#message-{message}")
    assert page.text_content(f"#message-{message} .text") == XSS
    assert page.locator("#message-list img[src='x']").count() == 0
    page.screenshot(path=str(artifacts / "messages-live.png"))
    control.request(
        "PATCH", f"/channels/{world['general']}/messages/{message}", content="edited live"
    )
    page.wait_for_function(
        f"() => document.querySelector('#message-{message} .text')?.textContent === 'edited live'"
    )
    assert page.locator(f"#message-{message} .edited").count() == 1
    control.request("DELETE", f"/channels/{world['general']}/messages/{message}")
    page.wait_for_selector(f"#message-{message}", state="detached")

    # A channel appears, gets a message (marked unread), is renamed, goes.
    room = control.request("POST", f"/guilds/{world['guild']}/channels", name=unique("room"))["id"]
    button = f".channel[data-channel-id='{room}']"
    page.wait_for_selector(button)
    post(control, world, room, "news in the new room")
    page.wait_for_selector(f"{button}.unread")
    assert "(new messages)" in page.text_content(button)
    control.request("PATCH", f"/channels/{room}", name="renamed-room")
    page.wait_for_function(
        f"() => document.querySelector(\"{button}\")?.textContent.includes('renamed-room')"
    )
    control.request("DELETE", f"/channels/{room}")
    page.wait_for_selector(button, state="detached")

    assert page.evaluate("window.sameDocument") is True
    page.click("#logout")
    watch.assert_clean()


def event_cursor(world: dict[str, Any], app_url: str) -> str:
    response = world["http"].get(
        f"{app_url}/api/events/poll",
        params={"wait": 0},
        headers={"Authorization": world["session"]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.headers["X-Event-Cursor"]


def wait_for_event(world: dict[str, Any], app_url: str, after: str, message_id: str) -> None:
    """Until MemberSense's event buffer holds the message.create of *message_id*."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = world["http"].get(
            f"{app_url}/api/events/poll",
            params={"after": after, "wait": 5},
            headers={"Authorization": world["session"]},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        if any(
            e["type"] == "message.create" and e["data"]["id"] == message_id for e in response.json()
        ):
            return
        after = response.headers["X-Event-Cursor"]
    raise AssertionError(f"message {message_id} never reached the event buffer")


def test_the_stream_reopens_with_a_new_ticket_and_misses_nothing(
    context: Any, app_url: str, world: dict[str, Any], control: Control
) -> None:
    """The server ends each stream after STREAM_SECONDS (as after 270 s by default): the page
    asks for a new one-time ticket and resumes from the last event it saw. A message posted
    while no stream is open (held between two streams here) still arrives."""
    page = context.new_page()
    watch = Watch(page)
    tickets: list[str] = []
    gap_messages: list[str] = []

    def ticket(route: Any) -> None:
        # Every ticket after the first is a reconnection: the previous stream has ended.
        # Twice, a message is posted (and reaches MemberSense's buffer) before it is given.
        tickets.append(route.request.url)
        if len(tickets) in (2, 3):
            after = event_cursor(world, app_url)
            message = post(control, world, world["general"], unique("between streams "))
            wait_for_event(world, app_url, after, message)
            gap_messages.append(message)
        route.continue_()

    page.route("**/api/events/ticket", ticket)
    log_in(page, app_url)
    open_channel(page, world["general"])
    live(page)
    deadline = time.monotonic() + 60
    while len(gap_messages) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert len(gap_messages) == 2, f"the page did not reconnect twice within 60 s: {tickets}"
    for message in gap_messages:
        page.wait_for_selector(f"#message-{message}")
        assert page.locator(f"#message-{message}").count() == 1
    live(page)
    streams = stream_urls(watch)
    assert len(streams) >= 3
    used = [s["ticket"][0] for s in streams]
    assert len(set(used)) == len(used), "a ticket was used twice"
    # Each reconnection resumes from the last event seen (the first starts from the cursor
    # the page took before reading the lists).
    assert all("lastEventId" in s for s in streams)
    page.click("#logout")
    watch.assert_clean()  # no 401: no used ticket was ever sent again


def test_the_send_box_is_off_where_the_channel_list_says_the_bot_may_not_post(
    context: Any, app_url: str, world: dict[str, Any], artifacts: Path
) -> None:
    page = context.new_page()
    watch = Watch(page)
    log_in(page, app_url)
    page.click("#tab-channels")
    page.click(f".channel[data-channel-id='{world['read_only']}']")
    page.wait_for_selector("#send-note", state="visible")
    assert (
        page.text_content("#send-note")
        == "Cannot send here: the bot has no permission to post in #staff-news."
    )
    assert page.get_attribute("#send-note", "role") == "alert"
    assert page.is_disabled("#send-text") and page.is_disabled("#send-button")
    readable(page, "#send-note")
    page.screenshot(path=str(artifacts / "send-refused.png"))
    page.emulate_media(color_scheme="dark")
    readable(page, "#send-note")
    page.emulate_media(color_scheme="light")
    # Another channel can be posted in; coming back, the box is off again.
    page.click(f".channel[data-channel-id='{world['general']}']")
    page.wait_for_selector("#message-list li.message")
    assert page.is_enabled("#send-text") and not page.is_visible("#send-note")
    page.click(f".channel[data-channel-id='{world['read_only']}']")
    page.wait_for_selector("#send-note", state="visible")
    assert page.is_disabled("#send-text")
    assert watch.api_requests("POST", "/api/messages") == []  # never asked
    page.click("#logout")
    watch.assert_clean()


def test_a_403_where_the_list_did_not_say_turns_the_box_off(
    context: Any, app_url: str, world: dict[str, Any], sandbox: SandboxServer
) -> None:
    # A server from before channels said canSend (or permissions changed since the list
    # was read): the page learns from the refusal, once.
    page = context.new_page()
    watch = Watch(page)

    def without_can_send(route: Any) -> None:
        answer = route.fetch()
        channels = [{k: v for k, v in c.items() if k != "canSend"} for c in answer.json()]
        route.fulfill(response=answer, body=json.dumps(channels))

    page.route("**/api/channels?type=all", without_can_send)
    log_in(page, app_url)
    page.click("#tab-channels")
    page.click(f".channel[data-channel-id='{world['read_only']}']")
    page.wait_for_function(
        "() => !document.querySelector('#messages-status').textContent.startsWith('Loading')"
    )
    assert page.is_enabled("#send-text")
    before = sandbox_messages(sandbox, world["read_only"])
    page.fill("#send-text", "may I?")
    page.click("#send-button")
    page.wait_for_selector("#send-note", state="visible")
    assert (
        page.text_content("#send-note")
        == "Cannot send here: the bot has no permission to post in #staff-news."
    )
    assert page.is_disabled("#send-text") and page.is_disabled("#send-button")
    assert sandbox_messages(sandbox, world["read_only"]) == before
    # Coming back, the box is still off, without asking again.
    page.click(f".channel[data-channel-id='{world['general']}']")
    page.wait_for_selector("#message-list li.message")
    assert page.is_enabled("#send-text") and not page.is_visible("#send-note")
    page.click(f".channel[data-channel-id='{world['read_only']}']")
    page.wait_for_selector("#send-note", state="visible")
    assert page.is_disabled("#send-text")
    assert len(watch.api_requests("POST", "/api/messages")) == 1
    page.click("#logout")
    watch.assert_clean(errors=(r"^403 POST \S+/api/messages$",), console=(FAILED_LOAD,))


def test_a_send_retried_after_a_lost_answer_or_a_504_posts_once(
    context: Any, app_url: str, world: dict[str, Any], sandbox: SandboxServer
) -> None:
    """The first answer is lost after MemberSense posted the message (the connection drops);
    the second message's first answer is a 504. The page retries each with its key."""
    page = context.new_page()
    watch = Watch(page)
    keys: list[str] = []

    def flaky(route: Any) -> None:
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            route.fetch()  # MemberSense posts it in Discord...
            route.abort("connectionreset")  # ...and its answer never reaches the page
        elif len(keys) == 3:
            route.fetch()
            route.fulfill(
                status=504,
                content_type="application/json",
                body=json.dumps({"error": "Discord did not respond in time"}),
            )
        else:
            route.continue_()

    page.route("**/api/messages", flaky)
    log_in(page, app_url)
    open_channel(page, world["general"])
    live(page)
    first, second = unique("lost answer "), unique("timed out ")
    for text in (first, second):
        page.fill("#send-text", text)
        page.press("#send-text", "Enter")
        wait_shown(page, text)
        page.wait_for_function("() => document.querySelector('#send-text').value === ''")
    stored = sandbox_messages(sandbox, world["general"])
    assert [m["content"] for m in stored].count(first) == 1
    assert [m["content"] for m in stored].count(second) == 1
    assert len(keys) == 4 and keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
    assert shown(page, first) == 1 and shown(page, second) == 1
    page.click("#logout")
    watch.assert_clean(
        errors=(r"^504 POST \S+/api/messages$",),
        console=(FAILED_LOAD, "Failed to load resource: net::ERR_CONNECTION_RESET"),
        failed=(r"^POST \S+/api/messages net::ERR_CONNECTION_RESET$",),
    )
    assert len(watch.failed) == 1 + len([f for f in watch.failed if "/api/events?" in f])


def test_a_session_ended_elsewhere_ends_the_page_and_its_requests(
    context: Any, app_url: str
) -> None:
    page = context.new_page()
    watch = Watch(page)
    log_in(page, app_url)
    live(page)
    session = page.evaluate("sessionStorage.getItem('membersense.session')")
    requests.post(f"{app_url}/api/auth/logout", headers={"Authorization": session}, timeout=30)
    # The stream says `end`; the ticket for the next one is refused (401): back to the login,
    # with nothing clicked.
    page.wait_for_selector("#login", state="visible")
    assert "session has ended" in page.text_content("#notice")
    assert page.locator("li.member").count() == 0 and page.text_content("#server-name") == ""
    assert not page.is_visible("#live")
    asked = len(watch.api_requests("POST", "/api/events/ticket"))
    page.wait_for_timeout((STREAM_SECONDS + 2) * 1000)  # a stream would have been reopened by now
    assert len(watch.api_requests("POST", "/api/events/ticket")) == asked
    assert [
        r.url for r in watch.requests if "/api/" in r.url and r.url.endswith("/api/events")
    ] == []
    watch.assert_clean(errors=(r"^401 POST \S+/api/events/ticket$",), console=(FAILED_LOAD,))
    assert watch.errors == [f"401 POST {app_url}/api/events/ticket"]


def test_a_host_that_refuses_streams_gets_the_long_poll(
    context: Any, app_url: str, world: dict[str, Any], control: Control
) -> None:
    """A stream answered 503 (a proxy that will not hold it, here): the page long-polls the
    real server with wait=25 and shows what happens as fast."""
    page = context.new_page()
    watch = Watch(page)
    page.route(
        lambda url: "/api/events?" in url,
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            headers={"Retry-After": "5"},
            body=json.dumps({"error": "Too many event streams are open; try again shortly"}),
        ),
    )
    log_in(page, app_url)
    live(page, "polling")
    assert page.text_content("#live-text") == "Live (polling)"
    before = member_count(page)
    control.request("POST", f"/guilds/{world['guild']}/members", username=unique("poller"))
    page.wait_for_function(
        f"() => document.querySelector('#member-count').textContent === '{before + 1} members'"
    )
    polls = [parse_qs(urlsplit(r.url).query) for r in watch.api_requests("GET", "/api/events/poll")]
    assert any(p.get("wait") == ["25"] and "after" in p for p in polls)
    page.click("#logout")
    watch.assert_clean(errors=(r"^503 GET \S+/api/events\?",), console=(FAILED_LOAD, "EventSource"))


@pytest.fixture(scope="module")
def crowded_url(sandbox: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MemberSense with no room for a stream or a waiting long-poll (MAX_EVENT_STREAMS=0)."""
    server = GunicornServer(
        {
            "DISCORD_API_BASE": sandbox.api_url,
            "DISCORD_GATEWAY_URL": sandbox.gateway_url,
            "DISCORD_CDN_BASE": sandbox.cdn_url,
            "RATE_LIMIT_MAX_REQUESTS": "100000",
            "MAX_EVENT_STREAMS": "0",
        },
        log_path=tmp_path_factory.mktemp("crowded") / "gunicorn.log",
    ).start()
    yield server.base_url
    server.stop()


def test_a_server_without_room_for_streams_is_polled_without_waiting(
    context: Any, crowded_url: str, world: dict[str, Any], control: Control, artifacts: Path
) -> None:
    """The per-process cap refuses the stream and the waiting long-poll (503): the page polls
    at once every few seconds (which holds no place) and still sees what happens."""
    page = context.new_page()
    watch = Watch(page)
    log_in(page, crowded_url)
    open_channel(page, world["general"])
    page.wait_for_function(
        "() => document.querySelector('#live-text').textContent === "
        "'Live (polling: the server is busy)'"
    )
    message = post(control, world, world["general"], unique("while the server is busy "))
    page.wait_for_selector(f"#message-{message}", timeout=30_000)
    page.screenshot(path=str(artifacts / "messages-polling.png"))
    polls = [parse_qs(urlsplit(r.url).query) for r in watch.api_requests("GET", "/api/events/poll")]
    assert any(p.get("wait") == ["0"] and "after" in p for p in polls)
    page.click("#logout")
    watch.assert_clean(
        errors=(r"^503 GET \S+/api/events(/poll)?\?",), console=(FAILED_LOAD, "EventSource")
    )


def test_a_guild_update_changes_the_server_card(
    context: Any, app_url: str, world: dict[str, Any]
) -> None:
    """The sandbox cannot rename its guild, so the first stream here is made up: it carries a
    ``guild.update`` in the shape the API sends (and a malformed frame, which is skipped);
    the page then reconnects to the real server and reads the members again, only if they
    changed (If-None-Match: a 304 here)."""
    page = context.new_page()
    watch = Watch(page)
    served: list[str] = []
    renamed = {
        "id": world["guild"],
        "name": "Renamed <b>Guild</b>",
        "memberCount": 7,
        "iconURL": None,
    }
    body = (
        "event: message.create\ndata: {not json\n\n"
        f"event: guild.update\ndata: {json.dumps(renamed)}\n\n"
    )

    def stream(route: Any) -> None:
        served.append(route.request.url)
        if len(served) == 1:
            route.fulfill(status=200, content_type="text/event-stream", body=body)
        else:
            route.continue_()

    page.route(lambda url: "/api/events?" in url, stream)
    log_in(page, app_url)
    page.wait_for_function(
        "() => document.querySelector('#server-name').textContent === 'Renamed <b>Guild</b>'"
    )
    assert page.text_content("#member-count") == "7 members"
    assert not page.is_visible("#server-icon") and page.locator(".bar b").count() == 0
    page.wait_for_function(
        "() => performance.getEntriesByType('resource')"
        ".filter(e => e.name.endsWith('/api/members')).length === 2"
    )
    revalidated = watch.api_requests("GET", "/api/members")[-1]
    assert revalidated.headers.get("if-none-match")
    assert revalidated.response().status == 304
    assert page.text_content("#member-count") == "7 members"  # nothing changed: not read again
    live(page)
    assert len(served) >= 2
    # A reload keeps the card as the last update left it.
    page.wait_for_load_state("networkidle")
    page.reload()
    page.wait_for_selector("#member-list li.member")
    assert page.text_content("#server-name") == "Renamed <b>Guild</b>"
    page.click("#logout")
    watch.assert_clean()


def test_an_end_from_a_server_going_away_keeps_a_valid_session(
    context: Any, app_url: str, world: dict[str, Any], control: Control
) -> None:
    """A server shutting down ends its streams with ``event: end`` too (made up here): the
    page asks for a new ticket, which it gets while the session is valid, and stays."""
    page = context.new_page()
    watch = Watch(page)
    served: list[str] = []

    def stream(route: Any) -> None:
        served.append(route.request.url)
        if len(served) == 1:
            route.fulfill(
                status=200,
                content_type="text/event-stream",
                body='event: end\ndata: {"reason":"session ended"}\n\n',
            )
        else:
            route.continue_()

    page.route(lambda url: "/api/events?" in url, stream)
    log_in(page, app_url)
    open_channel(page, world["general"])
    page.wait_for_function(
        "(n) => performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/api/events?ticket=')).length >= n",
        arg=2,
    )
    live(page)
    assert page.is_visible("#logout") and page.text_content("#notice") == ""
    message = post(control, world, world["general"], unique("after a server went away "))
    page.wait_for_selector(f"#message-{message}")
    page.click("#logout")
    watch.assert_clean()


def test_a_reset_reads_everything_again(
    context: Any, app_url: str, world: dict[str, Any], control: Control
) -> None:
    """The bot's gateway session is invalidated (op 9) and starts anew: events of the old one
    may be lost, so the stream sends ``reset`` and the page reads members, channels and the
    open channel's messages again, then goes on live. (Last in the module: it reconnects
    the bot every other test shares.)"""
    page = context.new_page()
    watch = Watch(page)
    log_in(page, app_url)
    open_channel(page, world["general"])
    live(page)

    def reads() -> tuple[int, int, int]:
        return (
            len(watch.api_requests("GET", "/api/members")),
            len(watch.api_requests("GET", "/api/channels")),
            len(watch.api_requests("GET", "/api/messages")),
        )

    before = reads()
    control.request("POST", "/gateway/invalidate")
    deadline = time.monotonic() + 30
    while (
        not all(after > first for after, first in zip(reads(), before, strict=True))
        and time.monotonic() < deadline
    ):
        page.wait_for_timeout(200)
    assert all(after > first for after, first in zip(reads(), before, strict=True)), (
        before,
        reads(),
    )
    page.wait_for_function(
        "(n) => document.querySelectorAll('#member-list li.member').length === n", arg=100
    )
    page.wait_for_selector("#message-list li.message")
    message = post(control, world, world["general"], unique("after the reset "))
    page.wait_for_selector(f"#message-{message}")
    page.click("#logout")
    # The member list may still be loading from Discord for a moment (503, tried again).
    watch.assert_clean(errors=(r"^503 GET \S+/api/members$",), console=(FAILED_LOAD,))
