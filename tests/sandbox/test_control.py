"""The sandbox control API (``/_sandbox/*``): world changes are visible over REST and dispatched."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from membersense.sandbox.server import SandboxServer
from tests.sandbox.conftest import TEST_TOKEN


def guild_ids(server: SandboxServer) -> dict:
    def read() -> dict:
        guild = next(iter(server.world.guilds.values()))
        text = [c for c in guild.channels if c.type == 0]
        human = next(
            m for m in guild.members.values() if not m.user.bot and m.user.id != guild.owner_id
        )
        return {
            "guild": guild.id,
            "text": text[0].id,
            "owner": guild.owner_id,
            "human": human.user.id,
            "bot": server.world.bot_for_token(TEST_TOKEN).id,
            "category": next(c.id for c in guild.channels if c.type == 4),
        }

    return server.run(read)


def record_events(server: SandboxServer) -> list:
    events: list = []
    server.run(lambda: server.world.events.subscribe(events.append))
    return events


def names(server: SandboxServer, events: list) -> list[str]:
    return server.run(lambda: [e.name for e in events])


def test_state_summary(sandbox, rest_client):
    client = rest_client(sandbox)
    state = client.control("GET", "/state").json()
    (guild,) = state["guilds"]
    assert guild["member_count"] == 51 and guild["messages"] == 90 and guild["channels"] == 7
    assert state["bots"][0]["username"] and state["bots"][0]["revoked"] is False
    assert TEST_TOKEN not in json.dumps(state)  # tokens are never echoed
    assert state["faults"] == [] and state["invalid_request_guard"]["limit"] is None
    assert state["gateway"] is not None


def test_member_lifecycle(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = guild_ids(sandbox)
    events = record_events(sandbox)
    added = client.control(
        "POST",
        f"/guilds/{ids['guild']}/members",
        {"username": "newbie", "global_name": "New Bie", "roles": ["Gamer"], "nick": "nb"},
    )
    assert added.status_code == 200
    member = added.json()
    user_id = member["user"]["id"]
    assert member["nick"] == "nb" and len(member["roles"]) == 1
    assert (
        client.get(f"/guilds/{ids['guild']}/members/{user_id}").json()["user"]["username"]
        == "newbie"
    )
    assert (
        client.get(f"/guilds/{ids['guild']}?with_counts=true").json()["approximate_member_count"]
        == 52
    )

    updated = client.control(
        "PATCH",
        f"/guilds/{ids['guild']}/members/{user_id}",
        {"nick": None, "roles": ["Moderator", "Member"]},
    ).json()
    assert updated["nick"] is None and len(updated["roles"]) == 2
    assert (
        client.get(f"/guilds/{ids['guild']}/members/{user_id}").json()["roles"] == updated["roles"]
    )

    client.control("PATCH", f"/guilds/{ids['guild']}/members/{user_id}", {"status": "dnd"})
    presence = sandbox.run(lambda: events[-1])
    assert presence.name == "PRESENCE_UPDATE" and presence.intent == 1 << 8
    assert presence.data == {
        "user": {"id": user_id},
        "guild_id": str(ids["guild"]),
        "status": "dnd",
        "activities": [],
        "client_status": {"desktop": "dnd"},
    }

    assert client.control("DELETE", f"/guilds/{ids['guild']}/members/{user_id}").status_code == 204
    assert client.get(f"/guilds/{ids['guild']}/members/{user_id}").json()["code"] == 10007
    assert names(sandbox, events) == [
        "GUILD_MEMBER_ADD",
        "GUILD_MEMBER_UPDATE",
        "PRESENCE_UPDATE",
        "GUILD_MEMBER_REMOVE",
    ]
    add_event = sandbox.run(lambda: events[0])
    assert (
        add_event.data["guild_id"] == str(ids["guild"]) and add_event.data["user"]["id"] == user_id
    )


def test_member_errors(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = guild_ids(sandbox)
    base = f"/guilds/{ids['guild']}/members"
    assert client.control("POST", base, {}).json()["code"] == 50035
    assert client.control("POST", base, {"username": "Upper"}).status_code == 400
    assert (
        client.control("POST", base, {"username": "x", "roles": ["No Such Role"]}).status_code
        == 400
    )
    taken = client.get(f"{base}/{ids['owner']}").json()["user"]["username"]
    assert client.control("POST", base, {"username": taken}).status_code == 400
    assert client.control("POST", "/guilds/1/members", {"username": "abc"}).json()["code"] == 10004
    assert client.control("PATCH", f"{base}/1", {"nick": "x"}).json()["code"] == 10007
    assert client.control("PATCH", f"{base}/{ids['human']}", {}).status_code == 400
    assert client.control("DELETE", f"{base}/{ids['bot']}").status_code == 400  # bots stay


def test_messages_as_members(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = guild_ids(sandbox)
    events = record_events(sandbox)
    channel = f"/channels/{ids['text']}/messages"
    posted = client.control(
        "POST", channel, {"author_id": str(ids["human"]), "content": f"hello <@{ids['bot']}>"}
    ).json()
    assert posted["author"]["id"] == str(ids["human"]) and posted["mentions"][0]["id"] == str(
        ids["bot"]
    )
    assert client.get(channel + "?limit=1").json()[0]["id"] == posted["id"]
    by_owner = client.control(
        "POST", channel, {"content": "owner speaks", "reply_to": posted["id"]}
    ).json()
    assert (
        by_owner["author"]["id"] == str(ids["owner"])
        and by_owner["referenced_message"]["id"] == posted["id"]
    )
    edited = client.control("PATCH", f"{channel}/{posted['id']}", {"content": "edited"}).json()
    assert edited["content"] == "edited" and edited["edited_timestamp"]
    assert client.get(f"{channel}/{posted['id']}").json()["content"] == "edited"
    assert client.control("DELETE", f"{channel}/{posted['id']}").status_code == 204
    assert client.get(f"{channel}/{posted['id']}").json()["code"] == 10008
    assert names(sandbox, events) == [
        "MESSAGE_CREATE",
        "MESSAGE_CREATE",
        "MESSAGE_UPDATE",
        "MESSAGE_DELETE",
    ]
    create = sandbox.run(lambda: events[0].data)
    assert create["guild_id"] == str(ids["guild"]) and "user" not in create["member"]

    assert client.control("POST", channel, {"content": ""}).status_code == 400
    assert (
        client.control("POST", channel, {"content": "x", "author_id": "1"}).json()["code"] == 10007
    )
    assert (
        client.control("POST", channel, {"content": "x", "reply_to": "1"}).json()["code"] == 10008
    )
    assert (
        client.control("POST", f"/channels/{ids['category']}/messages", {"content": "x"}).json()[
            "code"
        ]
        == 50008
    )
    assert client.control("PATCH", f"{channel}/1", {"content": "x"}).json()["code"] == 10008


def test_channels(sandbox, rest_client):
    client = rest_client(sandbox)
    ids = guild_ids(sandbox)
    events = record_events(sandbox)
    base = f"/guilds/{ids['guild']}/channels"
    category = client.control("POST", base, {"name": "Later", "type": "category"}).json()
    text = client.control(
        "POST", base, {"name": "new-text", "parent_id": category["id"], "topic": "t"}
    ).json()
    voice = client.control("POST", base, {"name": "Talk", "type": 2}).json()
    assert (category["type"], text["type"], voice["type"]) == (4, 0, 2)
    listed = {c["id"] for c in client.get(base).json()}
    assert {category["id"], text["id"], voice["id"]} <= listed
    renamed = client.control(
        "PATCH", f"/channels/{text['id']}", {"name": "renamed", "topic": None}
    ).json()
    assert renamed["name"] == "renamed" and renamed["topic"] is None
    sent = client.post(f"/channels/{text['id']}/messages", json={"content": "first!"})
    assert sent.status_code == 200
    assert client.control("DELETE", f"/channels/{category['id']}").status_code == 204
    assert client.get(f"/channels/{text['id']}").json()["parent_id"] is None
    assert client.control("DELETE", f"/channels/{text['id']}").status_code == 204
    assert client.get(f"/channels/{text['id']}").json()["code"] == 10003
    assert names(sandbox, events) == ["CHANNEL_CREATE"] * 3 + [
        "CHANNEL_UPDATE",
        "MESSAGE_CREATE",
        "CHANNEL_DELETE",
        "CHANNEL_UPDATE",
        "CHANNEL_DELETE",
    ]
    assert client.control("POST", base, {"name": "x", "type": "forum"}).status_code == 400
    assert client.control("POST", base, {"name": "x", "parent_id": text["id"]}).status_code == 400
    assert client.control("DELETE", "/channels/1").json()["code"] == 10003


def test_faults_endpoint(sandbox, rest_client):
    client = rest_client(sandbox)
    armed = client.control(
        "POST", "/faults", {"status": 503, "count": 2, "path": "/users/*", "delay_ms": 5}
    ).json()
    assert armed == {
        "faults": [
            {"status": 503, "remaining": 2, "path": "/users/*", "delay_ms": 5, "retry_after": 1.0}
        ]
    }
    assert client.control("GET", "/faults").json() == armed
    assert client.get("/users/@me").status_code == 503
    assert client.control("GET", "/faults").json()["faults"][0]["remaining"] == 1
    assert client.control("DELETE", "/faults").json() == {"faults": []}
    for bad in (
        {"status": 418, "count": 1},
        {"count": -1},
        {"status": 500},
        {"count": 1},
        {"status": 500, "count": 1, "path": "users"},
        {"status": 429, "count": 1, "retry_after": 0},
    ):
        assert client.control("POST", "/faults", bad).status_code == 400, bad


def test_revoke_token(sandbox_factory, rest_client):
    server = sandbox_factory(tokens=("keep", "drop"))
    keep, drop = rest_client(server, token="keep"), rest_client(server, token="drop")
    assert drop.get("/users/@me").status_code == 200
    revoked = drop.control("POST", "/tokens/drop/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert drop.get("/users/@me").json() == {"message": "401: Unauthorized", "code": 0}
    assert keep.get("/users/@me").status_code == 200
    assert drop.control("POST", "/tokens/drop/revoke").status_code == 200  # idempotent
    assert drop.control("POST", "/tokens/nope/revoke").status_code == 404


def test_ratelimit_reset(sandbox_factory, rest_client):
    server = sandbox_factory(route_limits={"GET /users/@me": (1, 600.0)})
    client = rest_client(server)
    assert [client.get("/users/@me").status_code for _ in range(2)] == [200, 429]
    assert client.control("POST", "/ratelimits/reset").json() == {"reset": True}
    assert client.get("/users/@me").status_code == 200


def test_unknown_control_routes_and_bodies(sandbox, rest_client):
    client = rest_client(sandbox)
    assert client.control("GET", "/nope").json() == {"message": "404: Not Found", "code": 0}
    assert client.control("GET", "/gateway/drop").json() == {
        "message": "405: Method Not Allowed",
        "code": 0,
    }
    bad = client.session.post(sandbox.base_url + "/_sandbox/faults", data=b"{x", timeout=10)
    assert bad.status_code == 400 and bad.json()["code"] == 50109
    assert bad.headers["Content-Type"] == "application/json"
    assert client.control("POST", "/faults", [1]).status_code == 400


def test_gateway_controls_reach_connected_sockets(sandbox):
    """Drive one raw gateway connection: reconnect (op 7), invalidate (op 9), revoke (4004), drop."""

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:

            async def control(path: str) -> dict:
                async with http.post(sandbox.base_url + "/_sandbox" + path) as response:
                    assert response.status == 200
                    return await response.json()

            async def connect() -> aiohttp.ClientWebSocketResponse:
                ws = await http.ws_connect(sandbox.gateway_url + "?v=10&encoding=json")
                hello = json.loads((await ws.receive(timeout=5)).data)
                assert hello["op"] == 10
                await ws.send_str(
                    json.dumps(
                        {
                            "op": 2,
                            "d": {
                                "token": TEST_TOKEN,
                                "intents": 1,
                                "properties": {"os": "linux", "browser": "t", "device": "t"},
                            },
                        }
                    )
                )
                while True:
                    message = json.loads((await ws.receive(timeout=5)).data)
                    if message.get("t") == "GUILD_CREATE":
                        return ws

            async def next_op(ws: aiohttp.ClientWebSocketResponse) -> dict:
                while True:
                    msg = await ws.receive(timeout=5)
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    payload = json.loads(msg.data)
                    if payload["op"] != 11:
                        return payload

            async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
                while True:
                    msg = await ws.receive(timeout=5)
                    if msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        return ws.close_code

            ws = await connect()
            assert await control("/gateway/reconnect") == {"connections": 1}
            assert (await next_op(ws))["op"] == 7
            await ws.close()

            ws = await connect()
            assert await control("/gateway/invalidate") == {"connections": 1}
            assert (await next_op(ws)) == {"op": 9, "d": False, "s": None, "t": None}
            await ws.close()

            ws = await connect()
            assert await control("/gateway/drop") == {"connections": 1}
            assert await closed_with(ws) != 1000  # no clean close
            await ws.close()

            ws = await connect()
            await control(f"/tokens/{TEST_TOKEN}/revoke")
            assert await closed_with(ws) == 4004
            await ws.close()

    asyncio.run(scenario())


def test_gateway_unavailable_answers_503(sandbox_factory, rest_client, monkeypatch):
    import membersense.sandbox.server as server_module

    monkeypatch.setattr(server_module, "load_gateway", lambda world, config: None)
    server = sandbox_factory()
    client = rest_client(server)
    response = client.session.get(server.base_url + "/ws", timeout=10)
    assert response.status_code == 503 and response.json() == {
        "message": "503: Service Unavailable",
        "code": 0,
    }
    assert client.control("POST", "/gateway/drop").status_code == 503
    assert client.control("GET", "/state").json()["gateway"] is None
    assert client.get("/users/@me").status_code == 200  # REST works without the gateway


@pytest.mark.parametrize("missing", ["membersense.sandbox.gateway", "some_dependency"])
def test_load_gateway_only_tolerates_its_own_absence(monkeypatch, missing):
    import builtins

    import membersense.sandbox.server as server_module

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "membersense.sandbox.gateway":
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    if missing == "membersense.sandbox.gateway":
        assert server_module.load_gateway(None, None) is None
    else:
        with pytest.raises(ModuleNotFoundError):
            server_module.load_gateway(None, None)
