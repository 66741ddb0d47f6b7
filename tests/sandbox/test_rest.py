"""The sandbox's REST API over real HTTP: auth, headers, pagination, writes, rate limits, faults, the guard."""

from __future__ import annotations

import json
import time

import pytest
import requests

from membersense.sandbox.config import DEMO_TOKEN, SandboxConfig
from membersense.sandbox.server import SandboxServer
from tests.sandbox.conftest import TEST_TOKEN


class FakeClock:
    """A monotonic clock moved by hand (rate-limit windows, bans)."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def ids_of(server: SandboxServer) -> dict:
    def read() -> dict:
        guild = next(iter(server.world.guilds.values()))
        text = [c for c in guild.channels if c.type == 0]
        return {
            "guild": guild.id,
            "text": text[0].id,
            "text2": text[-1].id,
            "owner": guild.owner_id,
            "messages": list(text[0].message_ids),
            "member_ids": sorted(guild.members),
            "bot": server.world.bot_for_token(TEST_TOKEN).id,
        }

    return server.run(read)


# ------------------------------------------------------------------ server basics
def test_sandbox_server_lifecycle_and_run():
    server = SandboxServer(port=0, members=5, channels=1, messages=2, tokens=("t1", "t2"))
    with pytest.raises(RuntimeError):
        server.run(lambda: 1)
    with server:
        port = server.port
        assert server.base_url.startswith("http://127.0.0.1:") and server.port > 0
        assert server.api_url == server.base_url + "/api/v10"
        assert server.gateway_url == f"ws://127.0.0.1:{server.port}/ws"
        assert server.tokens == ["t1", "t2"]
        assert server.cdn_url == server.base_url
        assert server.ready_line == (
            f"sandbox ready api={server.api_url} gateway={server.gateway_url} "
            f"cdn={server.cdn_url} tokens=t1,t2"
        )
        assert server.run(lambda: server.world.guilds and 42) == 42

        async def coroutine_fn() -> str:
            return "async"

        assert server.run(coroutine_fn) == "async"
        with pytest.raises(ZeroDivisionError):
            server.run(lambda: 1 / 0)
        with pytest.raises(RuntimeError):
            server.start()
    server.stop()  # idempotent
    with pytest.raises(requests.ConnectionError), requests.Session() as http:
        http.get(f"http://127.0.0.1:{port}/api/v10/gateway", timeout=2)


def test_demo_token_and_api_alias(sandbox_factory, rest_client):
    server = sandbox_factory(tokens=())
    assert server.tokens == [DEMO_TOKEN]
    client = rest_client(server, token=DEMO_TOKEN)
    v10 = client.get("/users/@me")
    alias = client.session.get(
        server.base_url + "/api/users/@me", headers={"Authorization": f"Bot {DEMO_TOKEN}"}
    )
    assert v10.status_code == alias.status_code == 200
    assert v10.json() == alias.json()


def test_start_failure_is_raised(tmp_path):
    with pytest.raises(ValueError, match="cannot read scenario"):
        SandboxServer(port=0, scenario=str(tmp_path / "missing.json")).start()


# ------------------------------------------------------------------ auth and headers
def test_authentication(sandbox, rest_client):
    client = rest_client(sandbox)
    assert client.get("/users/@me").status_code == 200
    for header in (
        {},
        {"Authorization": "wrong"},
        {"Authorization": f"Bearer {TEST_TOKEN}"},
        {"Authorization": "Bot nope"},
        {"Authorization": f"bot {TEST_TOKEN}"},
    ):
        response = client.session.get(sandbox.api_url + "/users/@me", headers=header)
        assert response.status_code == 401
        assert response.json() == {"message": "401: Unauthorized", "code": 0}
        assert response.headers["Content-Type"] == "application/json"
    assert client.get("/gateway", token="").status_code == 200  # the one unauthenticated route


def test_exact_json_content_type_and_discord_headers(sandbox, rest_client):
    client = rest_client(sandbox)
    for response in (
        client.get("/users/@me"),
        client.get("/channels/1"),
        client.get("/nope"),
        client.delete("/users/@me"),
        client.get("/users/@me", token="bad"),
    ):
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Via"] == "1.1 google"
        assert "X-RateLimit-Bucket" in response.headers  # on every answer, errors included
    ok = client.get("/users/@me")
    for header in (
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "X-RateLimit-Reset-After",
        "X-RateLimit-Bucket",
    ):
        assert header in ok.headers
    assert float(ok.headers["X-RateLimit-Reset"]) > time.time() - 1
    assert client.get("/nope").json() == {"message": "404: Not Found", "code": 0}
    assert client.delete("/users/@me").json() == {"message": "405: Method Not Allowed", "code": 0}


def test_buckets_are_per_route_and_major_parameter(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    a1 = client.get(f"/channels/{ids['text']}")
    a2 = client.get(f"/channels/{ids['text']}")
    b1 = client.get(f"/channels/{ids['text2']}")
    other = client.get(f"/channels/{ids['text']}/messages?limit=1")
    assert (
        a1.headers["X-RateLimit-Bucket"] == b1.headers["X-RateLimit-Bucket"]
    )  # one bucket hash per route
    assert a1.headers["X-RateLimit-Bucket"] != other.headers["X-RateLimit-Bucket"]
    assert int(a2.headers["X-RateLimit-Remaining"]) == int(a1.headers["X-RateLimit-Remaining"]) - 1
    assert (
        b1.headers["X-RateLimit-Remaining"] == a1.headers["X-RateLimit-Remaining"]
    )  # its own major parameter
    assert a1.headers["X-RateLimit-Limit"] == "50"


# ------------------------------------------------------------------ reads
def test_users_application_and_gateway(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    me = client.get("/users/@me").json()
    assert me["id"] == str(ids["bot"]) and me["bot"] is True
    assert client.get(f"/users/{ids['owner']}").json()["id"] == str(ids["owner"])
    app = client.get("/oauth2/applications/@me").json()
    assert app["bot"]["id"] == me["id"] and app["owner"]["id"] == str(ids["owner"])
    assert client.get("/gateway", token="").json() == {"url": sandbox.gateway_url}
    gateway_bot = client.get("/gateway/bot").json()
    assert gateway_bot["url"] == sandbox.gateway_url and gateway_bot["shards"] == 1
    assert gateway_bot["session_start_limit"]["total"] == 1000


def test_guild_reads(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    guilds = client.get("/users/@me/guilds?with_counts=true").json()
    assert [g["id"] for g in guilds] == [str(ids["guild"])]
    assert guilds[0]["approximate_member_count"] == 51
    guild = client.get(f"/guilds/{ids['guild']}").json()
    assert "approximate_member_count" not in guild
    assert (
        client.get(f"/guilds/{ids['guild']}?with_counts=1").json()["approximate_member_count"] == 51
    )
    roles = client.get(f"/guilds/{ids['guild']}/roles").json()
    assert roles[0]["id"] == str(ids["guild"]) and roles == guild["roles"]
    channels = client.get(f"/guilds/{ids['guild']}/channels").json()
    assert all(c["guild_id"] == str(ids["guild"]) for c in channels)
    assert client.get("/users/@me/guilds?after=" + str(ids["guild"])).json() == []
    assert len(client.get("/users/@me/guilds?before=" + str(ids["guild"] + 1)).json()) == 1


def test_member_pagination_walks_every_member_in_id_order(sandbox_factory, rest_client):
    server = sandbox_factory(members=2500, channels=1, messages=0)
    client = rest_client(server)
    ids = ids_of(server)
    assert len(client.get(f"/guilds/{ids['guild']}/members").json()) == 1  # Discord's default limit
    seen: list[int] = []
    after = 0
    while True:
        page = client.get(f"/guilds/{ids['guild']}/members?limit=1000&after={after}").json()
        if not page:
            break
        seen.extend(int(m["user"]["id"]) for m in page)
        after = seen[-1]
    assert seen == ids["member_ids"] and len(seen) == 2501
    member = client.get(f"/guilds/{ids['guild']}/members/{ids['owner']}").json()
    assert member["user"]["id"] == str(ids["owner"]) and member["roles"]


def test_member_search(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    owner = client.get(f"/guilds/{ids['guild']}/members/{ids['owner']}").json()
    prefix = owner["user"]["username"][:2].upper()
    found = client.get(
        f"/guilds/{ids['guild']}/members/search", params={"query": prefix, "limit": 1000}
    ).json()
    assert owner["user"]["id"] in [m["user"]["id"] for m in found]
    assert (
        len(
            client.get(
                f"/guilds/{ids['guild']}/members/search", params={"query": "a", "limit": 2}
            ).json()
        )
        <= 2
    )


def test_message_history_cursors(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    all_ids = [str(i) for i in ids["messages"]]  # oldest first
    channel = f"/channels/{ids['text']}/messages"
    newest = client.get(channel).json()
    assert [m["id"] for m in newest] == all_ids[::-1][:50]  # default limit 50 > the 30 there are
    assert [m["id"] for m in client.get(channel + "?limit=5").json()] == all_ids[-5:][::-1]
    assert [
        m["id"] for m in client.get(f"{channel}?limit=5&before={all_ids[10]}").json()
    ] == all_ids[5:10][::-1]
    assert [
        m["id"] for m in client.get(f"{channel}?limit=5&after={all_ids[10]}").json()
    ] == all_ids[11:16][::-1]
    assert [
        m["id"] for m in client.get(f"{channel}?limit=5&around={all_ids[10]}").json()
    ] == all_ids[8:13][::-1]
    one = client.get(f"{channel}/{all_ids[3]}").json()
    assert one["id"] == all_ids[3] and one["channel_id"] == str(ids["text"])


# ------------------------------------------------------------------ writes
def test_send_edit_delete_round_trip(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    channel = f"/channels/{ids['text']}/messages"
    sent = client.post(channel, json={"content": "hello", "nonce": 12345}).json()
    assert (
        sent["content"] == "hello"
        and sent["nonce"] == 12345
        and sent["author"]["id"] == str(ids["bot"])
    )
    assert int(sent["id"]) > ids["messages"][-1]
    assert client.get(channel + "?limit=1").json()[0]["id"] == sent["id"]
    assert client.get(f"/channels/{ids['text']}").json()["last_message_id"] == sent["id"]

    edited = client.patch(f"{channel}/{sent['id']}", json={"content": "hello again"}).json()
    assert edited["content"] == "hello again" and edited["edited_timestamp"] is not None
    assert client.patch(f"{channel}/{sent['id']}", json={"content": ""}).json()["code"] == 50006

    assert client.delete(f"{channel}/{sent['id']}").status_code == 204
    assert client.get(f"{channel}/{sent['id']}").json()["code"] == 10008
    assert client.post(f"/channels/{ids['text']}/typing").status_code == 204


def test_reply_mentions_and_allowed_mentions(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    channel = f"/channels/{ids['text']}/messages"
    target = client.get(f"{channel}/{ids['messages'][-1]}").json()
    reply = client.post(
        channel,
        json={
            "content": f"hi <@{ids['owner']}>",
            "message_reference": {"message_id": target["id"]},
        },
    ).json()
    assert reply["type"] == 19 and reply["referenced_message"]["id"] == target["id"]
    assert reply["message_reference"] == {
        "type": 0,
        "channel_id": str(ids["text"]),
        "message_id": target["id"],
        "guild_id": str(ids["guild"]),
    }
    mentioned = {u["id"] for u in reply["mentions"]}
    assert {str(ids["owner"]), target["author"]["id"]} <= mentioned
    quiet = client.post(
        channel,
        json={
            "content": f"hi <@{ids['owner']}>",
            "message_reference": {"message_id": target["id"]},
            "allowed_mentions": {"parse": []},
        },
    ).json()
    assert quiet["mentions"] == []
    missing = client.post(
        channel,
        json={
            "content": "x",
            "message_reference": {"message_id": "1", "fail_if_not_exists": False},
        },
    )
    assert missing.status_code == 200 and "message_reference" not in missing.json()


def test_enforce_nonce_returns_the_earlier_message_for_a_few_minutes(sandbox_factory, rest_client):
    from membersense.sandbox.world import NONCE_WINDOW_S

    clock = FakeClock()
    server = sandbox_factory(clock=clock)
    client = rest_client(server)
    ids = ids_of(server)
    channel = f"/channels/{ids['text']}/messages"
    first = client.post(
        channel, json={"content": "once", "nonce": "retry-1", "enforce_nonce": True}
    )
    assert first.status_code == 200
    again = client.post(
        channel, json={"content": "once", "nonce": "retry-1", "enforce_nonce": True}
    )
    assert again.json()["id"] == first.json()["id"]
    # Without enforce_nonce, or with another nonce, a nonce is only echoed back.
    plain = client.post(channel, json={"content": "once", "nonce": "retry-1"}).json()
    other = client.post(
        channel, json={"content": "once", "nonce": "retry-2", "enforce_nonce": True}
    ).json()
    assert len({first.json()["id"], plain["id"], other["id"]}) == 3
    history = client.get(f"{channel}?limit=10").json()
    assert [m["id"] for m in history].count(first.json()["id"]) == 1
    assert sum(m.get("nonce") == "retry-1" for m in history) == 2  # the first and the plain one
    # A deleted message is not returned again.
    assert client.delete(f"{channel}/{other['id']}").status_code == 204
    renewed = client.post(
        channel, json={"content": "once", "nonce": "retry-2", "enforce_nonce": True}
    ).json()
    assert renewed["id"] != other["id"]
    # After the window, the same nonce posts anew.
    clock.now += NONCE_WINDOW_S
    later = client.post(
        channel, json={"content": "once", "nonce": "retry-1", "enforce_nonce": True}
    ).json()
    assert later["id"] != first.json()["id"]
    bad = client.post(channel, json={"content": "x", "nonce": "n", "enforce_nonce": "yes"}).json()
    assert bad["code"] == 50035 and "enforce_nonce" in bad["errors"]


def test_validation_errors_name_the_field(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    channel = f"/channels/{ids['text']}/messages"
    too_long = client.post(channel, json={"content": "x" * 2001}).json()
    assert too_long["code"] == 50035 and too_long["message"] == "Invalid Form Body"
    assert (
        too_long["errors"]["content"]["_errors"][0]["message"] == "Must be 2000 or fewer in length."
    )
    assert client.post(channel, json={"content": "x" * 2000}).status_code == 200
    bad_embed = client.post(channel, json={"embeds": [{"title": "ok"}, {"title": 5}]}).json()
    assert "title" in bad_embed["errors"]["embeds"]["1"]
    limit = client.get(f"/guilds/{ids['guild']}/members?limit=1001").json()
    assert (
        limit["errors"]["limit"]["_errors"][0]["message"]
        == "int value should be less than or equal to 1000."
    )
    assert client.get(f"{channel}?limit=0").json()["errors"]["limit"]
    assert client.get(f"{channel}?before=abc").json()["errors"]["before"]
    assert (
        client.post(channel, data=b"nope", headers={"Content-Type": "application/json"}).json()[
            "code"
        ]
        == 50109
    )
    assert client.post(channel, json={"embeds": [{"title": "embed only"}]}).status_code == 200


def test_multipart_upload(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    payload = {"content": "see attached", "attachments": [{"id": 0, "description": "a log"}]}
    sent = client.post(
        f"/channels/{ids['text']}/messages",
        data={"payload_json": json.dumps(payload)},
        files={"files[0]": ("build.log", b"x" * 1234, "text/plain")},
    ).json()
    (attachment,) = sent["attachments"]
    assert attachment["filename"] == "build.log" and attachment["size"] == 1234
    assert attachment["content_type"] == "text/plain" and attachment["description"] == "a log"


def test_members_need_the_privileged_intent_and_guilds_need_membership(
    sandbox_factory, rest_client, tmp_path
):
    scenario = {
        "bots": [{"token": "a"}, {"token": "b", "privileged_intents": []}],
        "guilds": [
            {"name": "A", "members": 3, "channels": 1, "messages": 1, "bots": ["a"]},
            {"name": "B", "members": 3, "channels": 1, "messages": 1, "bots": ["b"]},
        ],
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    server = sandbox_factory(scenario=str(path), tokens=())
    a, b = rest_client(server, token="a"), rest_client(server, token="b")
    guild_a, guild_b = (
        g["id"]
        for g in (a.get("/users/@me/guilds").json()[0], b.get("/users/@me/guilds").json()[0])
    )
    assert a.get(f"/guilds/{guild_a}/members?limit=10").status_code == 200
    assert b.get(f"/guilds/{guild_b}/members?limit=10").json() == {
        "message": "Missing Access",
        "code": 50001,
    }
    assert b.get(f"/guilds/{guild_b}/members/{b.get('/users/@me').json()['id']}").status_code == 200
    assert a.get(f"/guilds/{guild_b}").json() == {"message": "Missing Access", "code": 50001}
    channel_b = b.get(f"/guilds/{guild_b}/channels").json()[0]["id"]
    assert a.get(f"/channels/{channel_b}").json() == {"message": "Missing Access", "code": 50001}
    assert a.get("/guilds/123").json() == {"message": "Unknown Guild", "code": 10004}


# ------------------------------------------------------------------ rate limits
def test_route_bucket_429_then_recovers_on_the_clock(sandbox_factory, rest_client):
    clock = FakeClock()
    server = sandbox_factory(clock=clock, route_limits={"GET /users/@me": (2, 10.0)})
    client = rest_client(server)
    first, second, third = (client.get("/users/@me") for _ in range(3))
    assert [r.status_code for r in (first, second, third)] == [200, 200, 429]
    assert second.headers["X-RateLimit-Remaining"] == "0"
    body = third.json()
    assert body["message"] == "You are being rate limited." and body["global"] is False
    assert 0 < body["retry_after"] <= 10
    assert third.headers["X-RateLimit-Scope"] == "user" and third.headers["Retry-After"] == "10"
    assert (
        third.headers["Via"] == "1.1 google" and third.headers["Content-Type"] == "application/json"
    )
    assert client.get("/gateway/bot").status_code == 200  # other routes are unaffected
    clock.now += 10
    assert client.get("/users/@me").status_code == 200


def test_global_limit(sandbox_factory, rest_client):
    server = sandbox_factory(clock=FakeClock(), global_rate_limit=3)
    client = rest_client(server)
    statuses = [
        client.get(path).status_code for path in ("/users/@me", "/gateway/bot", "/users/@me/guilds")
    ]
    limited = client.get("/oauth2/applications/@me")
    assert statuses == [200, 200, 200] and limited.status_code == 429
    assert limited.json()["global"] is True
    assert (
        limited.headers["X-RateLimit-Global"] == "true"
        and limited.headers["X-RateLimit-Scope"] == "global"
    )


# ------------------------------------------------------------------ faults
def test_faults_fail_then_clear(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = ids_of(sandbox)
    assert (
        client.control(
            "POST", "/faults", {"status": 500, "count": 2, "path": "/channels/*"}
        ).status_code
        == 200
    )
    assert client.get("/users/@me").status_code == 200  # not matching the glob
    failed = [client.get(f"/channels/{ids['text']}") for _ in range(2)]
    assert [r.status_code for r in failed] == [500, 500]
    assert failed[0].json() == {"message": "500: Internal Server Error", "code": 0}
    assert "X-RateLimit-Bucket" in failed[0].headers
    assert client.get(f"/channels/{ids['text']}").status_code == 200

    client.control("POST", "/faults", {"status": 503, "count": 5})
    assert client.control("POST", "/faults", {"count": 0}).json() == {"faults": []}
    assert client.get("/users/@me").status_code == 200

    client.control("POST", "/faults", {"status": 429, "count": 1, "retry_after": 2.5})
    shared = client.get("/users/@me")
    assert shared.status_code == 429 and shared.json()["retry_after"] == 2.5
    assert shared.headers["X-RateLimit-Scope"] == "shared" and shared.headers["Retry-After"] == "3"


def test_fault_delay_slows_calls(sandbox, rest_client):
    client = rest_client(sandbox)
    client.control("POST", "/faults", {"delay_ms": 300, "count": 1})
    started = time.perf_counter()
    assert client.get("/users/@me").status_code == 200
    assert time.perf_counter() - started >= 0.3
    assert client.control("GET", "/faults").json()["faults"] == []  # it was used up


# ------------------------------------------------------------------ invalid-request guard
def test_invalid_request_guard_bans_like_cloudflare(sandbox_factory, rest_client):
    clock = FakeClock()
    server = sandbox_factory(clock=clock, invalid_request_limit=3, invalid_request_ban_s=30.0)
    client = rest_client(server)
    client.control("POST", "/faults", {"status": 429, "count": 5})  # shared-scope 429s do not count
    assert [client.get("/users/@me").status_code for _ in range(5)] == [429] * 5
    assert client.get("/users/@me").status_code == 200
    assert [client.get("/users/@me", token="bad").status_code for _ in range(4)] == [401] * 4
    banned = client.get("/users/@me")  # even a valid request is refused now
    assert banned.status_code == 429
    assert banned.headers["Content-Type"].startswith("text/html") and "1015" in banned.text
    assert "Via" not in banned.headers and "X-RateLimit-Bucket" not in banned.headers
    assert int(banned.headers["Retry-After"]) == 30
    assert client.control("GET", "/state").json()["invalid_request_guard"]["banned"] == [
        "127.0.0.1"
    ]
    clock.now += 31
    assert client.get("/users/@me").status_code == 200


def test_guard_is_off_by_default(sandbox, rest_client):
    client = rest_client(sandbox)
    assert all(client.get("/users/@me", token="bad").status_code == 401 for _ in range(30))
    assert client.get("/users/@me").status_code == 200


def test_config_validation():
    with pytest.raises(ValueError):
        SandboxConfig(tokens=("a", "a"))
    with pytest.raises(ValueError):
        SandboxConfig(tokens=("has space",))
    with pytest.raises(ValueError):
        SandboxConfig(port=70000)


# ------------------------------------------------------------------ CLI
@pytest.mark.parametrize("stop_signal", ["SIGTERM", "SIGINT"])
def test_cli_prints_one_ready_line_serves_and_stops_on_signal(stop_signal):
    import signal
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "membersense.sandbox",
        "--port",
        "0",
        "--members",
        "20",
        "--channels",
        "1",
        "--messages",
        "2",
        "--token",
        "cli-a",
        "--token",
        "cli-b",
        "--seed",
        "5",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = __import__("re").fullmatch(
            r"sandbox ready api=(http://127\.0\.0\.1:(\d+)/api/v10) gateway=ws://127\.0\.0\.1:(\d+)/ws "
            r"cdn=http://127\.0\.0\.1:(\d+) tokens=cli-a,cli-b\n",
            line,
        )
        assert match, line
        api, port, ws_port, cdn_port = match.groups()
        assert port == ws_port == cdn_port and int(port) > 0
        with requests.Session() as http:
            me = http.get(api + "/users/@me", headers={"Authorization": "Bot cli-b"}, timeout=10)
            assert me.status_code == 200
            guilds = http.get(
                api + "/users/@me/guilds?with_counts=true",
                headers={"Authorization": "Bot cli-a"},
                timeout=10,
            ).json()
            assert guilds[0]["approximate_member_count"] == 22
        process.send_signal(getattr(signal, stop_signal))
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert out == ""  # exactly one line was printed
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_reports_bad_input(tmp_path, capsys):
    from membersense.sandbox.cli import build_parser, config_from_args, main

    assert main(["--port", "0", "--scenario", str(tmp_path / "missing.json")]) == 2
    assert "cannot read scenario" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad_limit:
        main(["--rate-limit", "lots"])
    assert bad_limit.value.code == 2
    args = build_parser().parse_args(
        [
            "--rate-limit",
            "5/2",
            "--route-limit",
            "POST /channels/{channel_id}/messages=5/5",
            "--invalid-request-limit",
            "100",
            "--heartbeat-interval",
            "1000",
            "--global-rate-limit",
            "50",
        ]
    )
    config = config_from_args(args)
    assert (config.rate_limit_per_route, config.rate_limit_window_s) == (5, 2.0)
    assert config.route_limits == {"POST /channels/{channel_id}/messages": (5, 5.0)}
    assert config.invalid_request_limit == 100 and config.heartbeat_interval_ms == 1000
    assert config.global_rate_limit == 50 and config.tokens == ()


def test_cli_port_in_use(capsys):
    import socket

    from membersense.sandbox.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port), "--members", "1", "--messages", "0"]) == 1
    assert "cannot listen" in capsys.readouterr().err
