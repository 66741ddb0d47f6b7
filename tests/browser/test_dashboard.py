"""The dashboard in a real Chromium, against gunicorn + the sandbox, as a newcomer uses it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from membersense.sandbox.server import SandboxServer

from .conftest import TOKEN
from .support import (
    FAILED_LOAD,
    SERVER_NAME,
    XSS,
    Watch,
    inside_the_viewport,
    live,
    log_in,
    log_in_without_members,
    no_broken_images,
    no_horizontal_overflow,
    open_channel,
    readable,
)


@pytest.fixture(scope="module")
def world(app_url: str, sandbox: SandboxServer) -> Iterator[dict[str, Any]]:
    """What the API says about the world, to compare the page with (and the XSS message)."""
    http = requests.Session()
    session = http.post(f"{app_url}/api/auth/login", json={"token": TOKEN}, timeout=60).json()[
        "sessionId"
    ]
    auth = {"Authorization": session}
    members = http.get(f"{app_url}/api/members", headers=auth, timeout=30).json()
    channels = http.get(f"{app_url}/api/channels", headers=auth, timeout=30).json()
    general = next(c for c in channels if c["name"] == "general")
    author = next(m for m in members if not m["bot"])
    posted = http.post(
        f"{sandbox.base_url}/_sandbox/channels/{general['id']}/messages",
        json={"author_id": author["id"], "content": XSS},
        timeout=10,
    )
    assert posted.status_code in (200, 201), posted.text
    newest = http.get(
        f"{app_url}/api/messages",
        params={"channelId": general["id"], "limit": 100},
        headers=auth,
        timeout=30,
    ).json()
    # Kept open for the module: the pages' logins share its gateway connection.
    yield {"members": members, "general": general, "newest": newest}
    http.post(f"{app_url}/api/auth/logout", headers=auth, timeout=30)
    http.close()


@pytest.mark.parametrize("context", ["desktop", "phone"], indirect=True)
def test_log_in_browse_members_and_messages_then_log_out(
    context: Any, app_url: str, world: dict[str, Any], artifacts: Path, request: Any
) -> None:
    size = request.node.callspec.params["context"]
    page = context.new_page()
    watch = Watch(page)
    page.goto(app_url)
    # Before logging in: the form, and nothing of a logged-in page.
    assert page.is_visible("#login") and not page.is_visible("#logout")
    assert not page.is_visible("#app-view") and not page.is_visible("#server")
    no_horizontal_overflow(page)
    icon = page.evaluate("""async () => {
      const image = new Image();
      image.src = document.querySelector("link[rel=icon]").href;
      await image.decode();
      return image.naturalWidth;
    }""")
    assert icon > 0  # the inline favicon is a picture (and /favicon.ico is never asked for)

    log_in(page, app_url)
    members = world["members"]
    assert page.text_content("#server-name") == SERVER_NAME
    assert page.text_content("#member-count") == f"{len(members)} members"
    assert page.is_visible("#logout")
    assert page.locator("#member-list li.member").count() == 100  # one page of the list
    assert page.text_content("#members-status") == f"{len(members)} of {len(members)} members"
    page.wait_for_function("() => document.querySelector('#server-icon').naturalWidth > 0")
    page.wait_for_function(
        "() => document.querySelector('#member-list img.avatar').naturalWidth > 0"
    )
    no_horizontal_overflow(page)
    for selector in (
        "#server-name",
        "#member-count",
        "#logout",
        "#member-list .joined",
        "#member-list .who span",
        "#members-status",
    ):
        readable(page, selector)
    for selector in ("#logout", "#member-list .joined", "#member-list .role"):
        inside_the_viewport(page, selector)
    page.screenshot(path=str(artifacts / f"members-{size}.png"))
    # Dark and light follow the system's preference.
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light
    for selector in ("#member-count", "#member-list .joined", "#member-list .who strong"):
        readable(page, selector)
    page.screenshot(path=str(artifacts / f"members-{size}-dark.png"))
    page.emulate_media(color_scheme="light")

    # Search one member by username (the whole list is searched, not the page shown).
    last = members[-1]
    page.fill("#member-search", last["username"])
    page.wait_for_function("() => document.querySelectorAll('#member-list li.member').length === 1")
    assert page.text_content("#member-list li.member strong").startswith(last["displayName"])
    page.fill("#member-search", "")

    # Filter by a role: every member holding it, whatever their top role.
    moderators = [m for m in members if "Moderator" in m["roles"]]
    page.select_option("#role-filter", "Moderator")
    page.wait_for_function(
        f"() => document.querySelector('#members-status').textContent.startsWith('{len(moderators)} of ')"
    )
    assert page.locator("#member-list li.member").count() == len(moderators)
    admins = [m for m in members if m["role"] == "Admin"]
    if admins:  # a top role's colour shows as the dot's colour
        colour = page.evaluate(
            "getComputedStyle(document.querySelector('#member-list .dot')).backgroundColor"
        )
        assert colour != ""

    # Channels: grouped by category, voice channels shown but not openable.
    page.click("#tab-channels")
    assert page.locator("#channel-groups h3").count() >= 2
    assert page.locator(".channel.voice[disabled]").count() >= 1
    general = world["general"]
    page.click(f".channel[data-channel-id='{general['id']}']")
    page.wait_for_selector("#message-list li.message")
    newest = world["newest"]
    assert page.locator("#message-list li.message").count() == 50
    # Newest at the bottom: the XSS message posted last is the last one, shown as text.
    last_message = page.locator("#message-list li.message").last
    assert last_message.get_attribute("id") == f"message-{newest[0]['id']}"
    assert last_message.locator(".text").text_content() == XSS
    assert page.locator("#message-list img[src='x']").count() == 0

    # Load older: the next page through `before`, above what was there.
    page.click("#older")
    page.wait_for_function(
        "() => document.querySelectorAll('#message-list li.message').length === 100"
    )
    first = page.locator("#message-list li.message").first
    assert first.get_attribute("id") == f"message-{newest[99]['id']}"
    text = page.text_content("#message-list")
    assert not re.search(r"<@!?\d+>", text), "a mention was shown raw"
    assert page.locator("#message-list .mention").count() > 0
    assert page.locator("#message-list .reply").count() > 0
    if any(m["editedTimestamp"] for m in newest):
        assert page.locator("#message-list .edited").count() > 0
    no_horizontal_overflow(page)
    no_broken_images(page)
    page.locator("#message-list li.message").last.scroll_into_view_if_needed()
    # The send box of the open channel fits the width too, and the page is live.
    assert page.is_visible("#send") and page.is_enabled("#send-text")
    assert page.get_attribute("#send-text", "placeholder") == "Message #general"
    inside_the_viewport(page, "#send-button")
    live(page)
    readable(page, "#live-text")
    page.screenshot(path=str(artifacts / f"messages-{size}.png"))

    # Log out: nothing of the guild is left on the page or in the tab's storage.
    page.click("#logout")
    page.wait_for_selector("#login", state="visible")
    body = page.inner_text("body")
    assert SERVER_NAME not in body and last["username"] not in body and XSS not in body
    assert page.locator("li.member, li.message, .channel").count() == 0
    assert page.evaluate("document.querySelectorAll('img[src]').length") == 0
    assert page.evaluate("sessionStorage.length") == 0
    assert not page.is_visible("#logout") and not page.is_visible("#live")
    assert not page.is_visible("#send") and page.input_value("#send-text") == ""
    no_horizontal_overflow(page)

    no_broken_images(page)
    assert watch.images_loaded > 0
    watch.assert_clean()


def test_a_reload_keeps_the_session_and_the_open_channel(
    context: Any, app_url: str, world: dict[str, Any]
) -> None:
    page = context.new_page()
    watch = Watch(page)
    log_in(page, app_url)
    page.click("#tab-channels")
    page.click(f".channel[data-channel-id='{world['general']['id']}']")
    page.wait_for_selector("#message-list li.message")
    stored = page.evaluate("Object.keys(sessionStorage)")
    assert stored == ["membersense.session"]  # the session id only; never the token
    assert TOKEN not in page.evaluate(
        "JSON.stringify(sessionStorage) + JSON.stringify(localStorage)"
    )
    page.wait_for_load_state("networkidle")  # a reload would cancel requests still under way
    page.reload()
    page.wait_for_selector("#message-list li.message")
    assert page.text_content("#channel-title") == "#general"
    assert page.text_content("#server-name") == SERVER_NAME
    page.click("#logout")
    watch.assert_clean()


def test_keyboard_only(context: Any, app_url: str, world: dict[str, Any]) -> None:
    page = context.new_page()
    page.goto(app_url)
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_selector("#member-list li.member")
    page.focus("#tab-members")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-channels", "aria-selected") == "true"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.className")
    assert "channel" in focused
    page.keyboard.press("Enter")
    page.wait_for_selector("#message-list li.message")
    # Past the channels, one key skips the messages' links to the message box; Enter
    # sends, Shift+Enter starts a new line.
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "to-send":
            break
    assert page.evaluate("document.activeElement.id") == "to-send"
    assert page.is_visible("#to-send")  # seen while focused
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "send-text"
    page.keyboard.type("typed with the keyboard")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("on two lines")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#message-list .text')]"
        ".some(n => n.textContent === 'typed with the keyboard\\non two lines')"
    )
    assert page.evaluate("document.activeElement.id") == "send-text"  # ready for the next one
    page.click("#logout")


@pytest.mark.parametrize("context", ["narrow"], indirect=True)
def test_send_errors_say_why_and_when_to_try_again(
    context: Any, app_url: str, world: dict[str, Any], artifacts: Path
) -> None:
    """At 360 px: an empty message, the server's 400, a 429 and a 503 (these two made up
    here), each said in words, the text kept, Send held back as long as the server asks."""
    page = context.new_page()
    watch = Watch(page)
    made_up = [
        (429, {"error": "Too many requests", "retryAfter": 2}, {"Retry-After": "2"}),
        (
            503,
            {"error": "Discord is rate limiting this bot; try again later"},
            {"Retry-After": "3"},
        ),
    ]

    def answer(route: Any) -> None:
        if route.request.method != "POST" or route.request.post_data.count("x") > 2000:
            route.continue_()  # the real server answers the long one
            return
        status, body, headers = made_up.pop(0)
        route.fulfill(
            status=status, body=json.dumps(body), content_type="application/json", headers=headers
        )

    page.route("**/api/messages", answer)
    log_in(page, app_url)
    open_channel(page, world["general"]["id"])
    page.press("#send-text", "Enter")
    assert page.text_content("#send-error") == "Write a message first."
    # Past the box's maxlength (as a paste through a script could): the server's own words.
    page.evaluate("document.querySelector('#send-text').value = 'x'.repeat(2001)")
    page.press("#send-text", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#send-error').textContent === "
        "'Not sent: content must be text of 1 to 2000 characters.'"
    )
    page.fill("#send-text", "hello")
    page.press("#send-text", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#send-error').textContent === "
        "'Not sent: too many requests. Try again in 2 s.'"
    )
    assert page.is_disabled("#send-button") and page.input_value("#send-text") == "hello"
    no_horizontal_overflow(page)
    readable(page, "#send-error")
    page.screenshot(path=str(artifacts / "send-error-narrow.png"))
    page.wait_for_selector("#send-button:enabled", timeout=15_000)
    assert page.text_content("#send-status") == "You can send again now."
    page.press("#send-text", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#send-error').textContent === "
        "'Not sent: Discord is rate limiting this bot; try again later. Try again in 3 s.'"
    )
    page.emulate_media(color_scheme="dark")
    readable(page, "#send-error")
    no_horizontal_overflow(page)
    assert made_up == []
    page.click("#logout")
    watch.assert_clean(errors=(r"^(400|429|503) POST \S+/api/messages$",), console=(FAILED_LOAD,))


def test_an_ended_session_goes_back_to_the_login(context: Any, app_url: str) -> None:
    """A read answered 401 (test_live has the stream's `end` doing the same)."""
    page = context.new_page()
    page.route("**/api/events/ticket", lambda route: None)  # no stream here: the read notices
    log_in(page, app_url)
    session = page.evaluate("sessionStorage.getItem('membersense.session')")
    requests.post(f"{app_url}/api/auth/logout", headers={"Authorization": session}, timeout=30)
    page.click("#tab-channels")
    page.locator(".channel.text").first.click()
    page.wait_for_selector("#login", state="visible")
    assert "session has ended" in page.text_content("#notice")
    assert page.locator("li.member").count() == 0 and page.text_content("#server-name") == ""


def test_busy_rate_limited_and_unreachable_states(context: Any, app_url: str) -> None:
    page = context.new_page()

    def fulfill(status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        return lambda route: route.fulfill(
            status=status,
            body=json.dumps(body),
            content_type="application/json",
            headers=headers or {},
        )

    page.route(
        "**/api/members",
        fulfill(503, {"error": "Discord is rate limiting the bot"}, {"Retry-After": "12"}),
    )
    page.route(
        "**/api/channels?type=all", fulfill(429, {"error": "Too many requests", "retryAfter": 7})
    )
    log_in_without_members(page, app_url)
    page.wait_for_function(
        "() => document.querySelector('#channels-status').textContent.length > 0"
    )
    assert (
        page.text_content("#members-status")
        == "Discord is rate limiting the bot. Try again in 12 s."
    )
    page.click("#tab-channels")
    assert page.text_content("#channels-status") == "Too many requests. Try again in 7 s."

    page.unroute("**/api/channels?type=all")
    page.route(
        "**/api/channels?type=all",
        fulfill(
            200,
            [
                {
                    "id": "1",
                    "name": "general",
                    "type": "text",
                    "parentId": None,
                    "position": 0,
                    "topic": None,
                }
            ],
        ),
    )
    page.route("**/api/messages?*", lambda route: route.abort("internetdisconnected"))
    page.reload()
    page.click("#tab-channels")
    page.click(".channel[data-channel-id='1']")
    page.wait_for_function(
        "() => document.querySelector('#messages-status').textContent.startsWith('Cannot reach')"
    )

    page.unroute("**/api/messages?*")
    page.route("**/api/messages?*", fulfill(200, []))
    page.click(".channel[data-channel-id='1']")
    page.wait_for_function(
        "() => document.querySelector('#messages-status').textContent === 'No messages in this channel yet.'"
    )
    page.click("#logout")


def test_a_hundred_thousand_members_stay_one_page_of_rows(context: Any, app_url: str) -> None:
    big = [
        {
            "id": str(10**17 + i),
            "username": f"user{i:06d}",
            "displayName": f"User {i}",
            "avatar": None,
            "roles": ["Member", "@everyone"] if i % 3 else ["Gamer", "Member", "@everyone"],
            "role": "Member" if i % 3 else "Gamer",
            "joinedAt": "2024-01-01T00:00:00.000Z",
            "bot": False,
            "roleColor": "#95a5a6",
        }
        for i in range(100_000)
    ]
    body = json.dumps(big)
    page = context.new_page()
    # 15 MB of JSON through Playwright's pipe and Chromium's parser: minutes on a loaded
    # 2-core box are possible, and this test is about rows, not speed.
    page.set_default_timeout(120_000)
    page.route(
        "**/api/members",
        lambda route: route.fulfill(status=200, body=body, content_type="application/json"),
    )
    log_in(page, app_url)
    assert page.text_content("#members-status") == "100,000 of 100,000 members"
    assert page.locator("#member-list li").count() == 100
    page.fill("#member-search", "user099999")
    page.wait_for_function(
        "() => document.querySelector('#members-status').textContent === '1 of 100,000 members'"
    )
    page.fill("#member-search", "")
    page.select_option("#role-filter", "Gamer")
    page.wait_for_function(
        "() => document.querySelector('#members-status').textContent.startsWith('33,334 of')"
    )
    page.click("#next-page")
    assert page.text_content("#page-info") == "101–200 of 33,334"
    page.click("#logout")
