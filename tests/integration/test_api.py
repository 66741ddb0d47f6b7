"""The API under gunicorn against the sandbox: logins, members, channels, messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.integration.conftest import MemberSense
from tests.integration.support import (
    DISCORD_SHAPED_TOKEN,
    LONELY_TOKEN,
    MAIN_GUILD_MEMBERS,
    MULTI_TOKEN,
    NO_INTENTS_TOKEN,
    Api,
    Control,
    log_records,
    wait_until,
)

MAIN_BOTS = 4  # bots in the Alpha guild besides its human members


@pytest.fixture(scope="module", autouse=True)
def keepers(app_server: MemberSense) -> Iterator[None]:
    """Keep the main bots logged in for the whole module.

    Their gateway connections then outlive each test's own logout, as they
    would with any other session open: tests log in and read at once instead
    of waiting out the sandbox's member-request cooldown on every reconnect
    (test_lifecycle covers connections that close and open again).
    """
    assert app_server.api is not None
    sessions = [app_server.api.login(token) for token in ("main-bot-token", MULTI_TOKEN)]
    yield
    for session in sessions:
        app_server.api.logout(session)


def _ids(response) -> list[int]:
    return [int(m["id"]) for m in response.json()]


def test_login_answers_like_the_original(api: Api, control: Control) -> None:
    response = api.post_login("main-bot-token")
    assert response.status_code == 200
    body = response.json()
    api.logout(body["sessionId"])
    assert body["message"] == "Logged in successfully"
    assert len(body["sessionId"]) == 21
    assert body["serverName"] == "Alpha"
    assert body["memberCount"] == MAIN_GUILD_MEMBERS + MAIN_BOTS
    assert body["guildId"] == control.guild_id("Alpha")
    assert body["iconURL"] is None or body["iconURL"].startswith(
        "https://cdn.discordapp.com/icons/"
    )
    assert "guilds" not in body


def test_a_bot_in_several_guilds_lists_them_and_reads_each(api: Api, control: Control) -> None:
    response = api.post_login(MULTI_TOKEN)
    assert response.status_code == 200
    body = response.json()
    session = body["sessionId"]
    try:
        assert {g["name"] for g in body["guilds"]} == {"Alpha", "Beta"}
        beta = control.guild_id("Beta")
        members = api.get("/api/members", session, guildId=beta)
        assert members.status_code == 200
        assert len(members.json()) == 21  # 20 humans and the bot
        assert api.get("/api/channels", session, guildId=beta).status_code == 200
        assert api.get("/api/members", session, guildId="12345").status_code == 404
    finally:
        api.logout(session)


def test_wrong_token_is_a_fast_401_without_a_gateway_connection(api: Api, control: Control) -> None:
    before = control.gateway()["connections_opened"]
    response = api.post_login("not-a-real-token")
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid Discord token"}
    assert control.gateway()["connections_opened"] == before


def test_missing_privileged_intents_is_a_400_naming_them(api: Api, control: Control) -> None:
    before = control.gateway()["identified"]
    response = api.post_login(NO_INTENTS_TOKEN)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "Server Members Intent" in error and "Message Content Intent" in error
    assert "Developer Portal" in error
    assert control.gateway()["identified"] == before  # no IDENTIFY spent


def test_a_bot_in_no_guild_is_told_so(api: Api, control: Control) -> None:
    response = api.post_login(LONELY_TOKEN)
    assert response.status_code == 400
    assert "not in any server" in response.json()["error"]
    wait_until(lambda: control.connections_of("Lonely Bot") == 0, what="the gateway to close")


def test_members_are_the_whole_guild_sorted_by_id(api: Api) -> None:
    session = api.login()
    response = api.get("/api/members", session)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    members = response.json()
    assert len(members) == MAIN_GUILD_MEMBERS + MAIN_BOTS
    ids = [int(m["id"]) for m in members]
    assert ids == sorted(ids)
    for member in members:
        assert set(member) == {
            "id",
            "username",
            "displayName",
            "avatar",
            "roles",
            "role",
            "joinedAt",
            "bot",
            "roleColor",
        }
        assert member["role"] == member["roles"][0]
        assert member["roles"][-1] == "@everyone"
        assert member["avatar"].startswith("https://cdn.discordapp.com/")
    assert sum(m["bot"] for m in members) == MAIN_BOTS
    assert any(m["role"] != "@everyone" for m in members)
    # The colour Discord gives a name: its highest coloured role's (the sandbox's Admin is red).
    assert {m["roleColor"] for m in members if m["role"] == "Admin"} == {"#e74c3c"}
    assert {m["roleColor"] for m in members if m["roles"] == ["@everyone"]} <= {None}


def test_pages_walk_the_same_list(api: Api) -> None:
    session = api.login()
    everyone = api.get("/api/members", session).json()
    walked: list[dict] = []
    after = None
    while True:
        params = {"limit": 300, **({"after": after} if after else {})}
        page = api.get("/api/members", session, **params)
        assert page.status_code == 200
        chunk = page.json()
        if not chunk:
            break
        assert len(chunk) <= 300
        walked.extend(chunk)
        after = chunk[-1]["id"]
    assert walked == everyone
    assert api.get("/api/members", session, limit=0).status_code == 400
    assert api.get("/api/members", session, limit=1001).status_code == 400
    assert api.get("/api/members", session, after="x").status_code == 400


def test_etag_answers_304_until_a_member_joins(api: Api, control: Control) -> None:
    session = api.login()
    first = api.get("/api/members", session)
    etag = first.headers["ETag"]
    again = api.get("/api/members", session, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""

    alpha = control.guild_id("Alpha")
    added = control.request(
        "POST", f"/guilds/{alpha}/members", username="newcomer_zed", global_name="Zed"
    )

    def joined():
        response = api.get("/api/members", session, headers={"If-None-Match": etag})
        return response if response.status_code == 200 else None

    changed = wait_until(joined, what="the new member to show")
    assert changed.headers["ETag"] != etag
    newcomer = [m for m in changed.json() if m["id"] == added["user"]["id"]]
    assert newcomer and newcomer[0]["displayName"] == "Zed"
    assert len(changed.json()) == len(first.json()) + 1

    control.request("PATCH", f"/guilds/{alpha}/members/{added['user']['id']}", nick="Zeddy")
    wait_until(
        lambda: any(
            m.get("displayName") == "Zeddy" for m in api.get("/api/members", session).json()
        ),
        what="the nickname to show",
    )
    control.request("DELETE", f"/guilds/{alpha}/members/{added['user']['id']}")
    wait_until(
        lambda: (
            added["user"]["id"] not in {m["id"] for m in api.get("/api/members", session).json()}
        ),
        what="the member to leave",
    )


def test_channels_by_kind(api: Api) -> None:
    session = api.login()
    text = api.get("/api/channels", session).json()
    assert text and all(c["type"] == "text" for c in text)
    assert set(text[0]) == {"id", "name", "type", "parentId", "position", "topic", "canSend"}
    # Where the bot may post: not in a channel it cannot even see.
    assert {c["name"]: c["canSend"] for c in text if c["name"] in ("general", "staff-only")} == {
        "general": True,
        "staff-only": False,
    }
    everything = api.get("/api/channels", session, type="all").json()
    kinds = {c["type"] for c in everything}
    assert {"text", "voice", "category"} <= kinds
    voice = api.get("/api/channels", session, type="voice").json()
    assert voice and all(c["type"] == "voice" for c in voice)
    categories = api.get("/api/channels", session, type="category").json()
    assert {c["id"] for c in categories} >= {c["parentId"] for c in text if c["parentId"]}
    assert api.get("/api/channels", session, type="dm").status_code == 400


def _readable_channel(api: Api, session: str) -> str:
    for channel in api.get("/api/channels", session).json():
        if channel["name"] != "staff-only":
            response = api.get("/api/messages", session, channelId=channel["id"], limit=1)
            if response.status_code == 200 and response.json():
                return channel["id"]
    raise AssertionError("no readable channel with messages")


def test_messages_newest_first_with_each_cursor(api: Api) -> None:
    session = api.login()
    channel = _readable_channel(api, session)
    newest = api.get("/api/messages", session, channelId=channel)
    assert newest.status_code == 200
    page = newest.json()
    assert len(page) == 100  # the original's default
    ids = _ids(newest)
    assert ids == sorted(ids, reverse=True)
    first = page[0]
    assert set(first) == {
        "id",
        "channelId",
        "content",
        "author",
        "timestamp",
        "editedTimestamp",
        "attachments",
        "embeds",
        "replyTo",
    }
    assert set(first["author"]) == {"id", "username", "name", "avatar"}
    assert isinstance(first["timestamp"], int) and first["timestamp"] > 1_400_000_000_000
    assert any(m["content"] for m in page)  # MESSAGE_CONTENT granted

    pivot = ids[10]
    before = _ids(api.get("/api/messages", session, channelId=channel, before=pivot, limit=5))
    assert before == ids[11:16]
    after = _ids(api.get("/api/messages", session, channelId=channel, after=pivot, limit=5))
    assert after == sorted(after, reverse=True) and all(i > pivot for i in after)
    assert set(after) == set(ids[5:10])
    around = _ids(api.get("/api/messages", session, channelId=channel, around=pivot, limit=5))
    assert pivot in around and around == sorted(around, reverse=True)
    two = api.get("/api/messages", session, channelId=channel, before=pivot, after=pivot)
    assert two.status_code == 400


def test_message_errors_are_404_403_and_400(api: Api, control: Control) -> None:
    session = api.login()
    missing = api.get("/api/messages", session)
    assert missing.status_code == 400 and missing.json()["error"] == "Channel ID is required"
    unknown = api.get("/api/messages", session, channelId="123456789012345678")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Channel not found"}
    # A channel of a guild this session did not ask for is not found either.
    multi = api.login(MULTI_TOKEN)
    beta = control.guild_id("Beta")
    beta_channel = api.get("/api/channels", multi, guildId=beta).json()[0]["id"]
    assert api.get("/api/messages", session, channelId=beta_channel).status_code == 404
    assert api.get("/api/messages", multi, channelId=beta_channel).status_code == 404
    assert api.get("/api/messages", multi, channelId=beta_channel, guildId=beta).status_code == 200
    hidden = [c for c in api.get("/api/channels", session).json() if c["name"] == "staff-only"]
    assert hidden, "the scenario has a hidden channel"
    forbidden = api.get("/api/messages", session, channelId=hidden[0]["id"])
    assert forbidden.status_code == 403
    category = api.get("/api/channels", session, type="category").json()[0]["id"]
    assert api.get("/api/messages", session, channelId=category).status_code == 400
    for response in (unknown, forbidden):
        assert set(response.json()) == {"error"}


def test_no_token_reaches_the_logs(app_server: MemberSense, api: Api) -> None:
    session = api.login()
    api.get("/api/members", session, limit=5)
    api.post_login("not-a-real-token")
    log = app_server.server.log()
    assert "bot connected" in log
    for token in ("main-bot-token", "not-a-real-token", session):
        assert token not in log
    for line in log.splitlines():
        if line.startswith("{"):
            json.loads(line)  # every line is one JSON object


def test_no_token_reaches_the_logs_even_at_debug(
    membersense_factory: Callable[..., MemberSense],
) -> None:
    # discord.py logs every gateway payload and HTTP request at DEBUG. A token shaped
    # like Discord's must never reach any log record: not even redacted (the filter
    # that blanks token-shaped text is a last line of defence, not the reason).
    server = membersense_factory(LOG_LEVEL="DEBUG")
    api = server.api
    assert api is not None
    response = api.post_login(DISCORD_SHAPED_TOKEN)
    assert response.status_code == 200, response.text
    session = response.json()["sessionId"]
    assert len(api.get("/api/members", session).json()) == 11  # ten humans and the bot
    channel = api.get("/api/channels", session).json()[0]["id"]
    assert api.get("/api/messages", session, channelId=channel).json()
    assert api.logout(session).status_code == 200
    wait_until(lambda: "session closed" in server.server.log(), what="the logout to be logged")
    log = server.server.log()
    assert any(
        record["severity"] == "DEBUG" and record["logger"].startswith("discord.")
        for record in log_records(log)
    )  # it was that loud
    assert DISCORD_SHAPED_TOKEN not in log
    assert DISCORD_SHAPED_TOKEN.split(".")[0] not in log  # nor any part of it
    assert "[redacted]" not in log
    assert session not in log


def test_the_whole_list_is_sent_gzipped_to_clients_that_accept_it(api: Api) -> None:
    session = api.login()
    zipped = api.get("/api/members", session, headers={"Accept-Encoding": "gzip"})
    plain = api.get("/api/members", session, headers={"Accept-Encoding": "identity"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain.headers
    assert (
        "Accept-Encoding" in zipped.headers["Vary"] and "Accept-Encoding" in plain.headers["Vary"]
    )
    assert int(zipped.headers["Content-Length"]) * 3 < int(plain.headers["Content-Length"])
    assert zipped.json() == plain.json()  # requests decompresses
    assert zipped.headers["ETag"] != plain.headers["ETag"]
    again = api.get(
        "/api/members",
        session,
        headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]},
    )
    assert again.status_code == 304
