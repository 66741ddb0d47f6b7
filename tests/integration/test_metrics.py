"""Discord-side metrics through real discord.py and the sandbox: gateway connections,
Discord's answers by status, open sessions."""

from __future__ import annotations

from collections.abc import Callable

import requests

from tests.integration.conftest import MemberSense
from tests.integration.support import MAIN_TOKEN, wait_until
from tests.test_metrics import value


def scrape(server: MemberSense) -> str:
    response = requests.get(f"{server.server.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def test_gateway_connections_discord_answers_and_sessions(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    server = membersense_factory(METRICS_PUBLIC="1")
    api = server.api
    assert api is not None
    before = scrape(server)
    assert value(before, "membersense_gateway_connections") == 0
    first = api.login(MAIN_TOKEN)
    second = api.login(MAIN_TOKEN)  # shares the first one's connection
    channels = api.get("/api/channels", first).json()
    assert api.get("/api/messages", first, channelId=channels[0]["id"], limit=5).status_code == 200
    during = scrape(server)
    assert value(during, "membersense_gateway_connections") == 1
    assert value(during, "membersense_sessions_active") == 2
    # The login's REST calls and the history read, as Discord (the sandbox) answered them.
    answered = value(during, "membersense_discord_responses_total", status="200") - value(
        before, "membersense_discord_responses_total", status="200"
    )
    assert answered >= 3
    assert api.logout(first).status_code == 200
    assert value(scrape(server), "membersense_gateway_connections") == 1
    assert api.logout(second).status_code == 200
    after = wait_until(
        lambda: (
            (text := scrape(server))
            and value(text, "membersense_gateway_connections") == 0
            and text
        ),
        what="the connection to close",
    )
    assert value(after, "membersense_sessions_active") == 0


def test_discord_refusals_are_counted_by_status(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    server = membersense_factory(METRICS_PUBLIC="1")
    api = server.api
    assert api is not None
    before = value(scrape(server), "membersense_discord_responses_total", status="401")
    assert api.post_login("no-such-bot-token").status_code == 401
    assert value(scrape(server), "membersense_discord_responses_total", status="401") > before
