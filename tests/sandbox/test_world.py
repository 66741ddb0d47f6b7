"""Unit tests of the sandbox world: generation, payload shapes, queries and dispatched changes."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from membersense.sandbox.config import DEMO_TOKEN, SandboxConfig
from membersense.sandbox.generator import ANCHOR_MS, build_world
from membersense.sandbox.models import (
    CHANNEL_CATEGORY,
    CHANNEL_TEXT,
    CHANNEL_VOICE,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    PERM_VIEW_CHANNEL,
)
from membersense.sandbox.scenario import ScenarioError, parse_scenario
from membersense.sandbox.snowflake import (
    DISCORD_EPOCH_MS,
    SnowflakeFactory,
    make_snowflake,
    snowflake_ms,
)
from membersense.sandbox.world import World, WorldEvent


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def small_world(**overrides: object) -> World:
    config = SandboxConfig(
        **{"members": 40, "channels": 3, "messages": 30, "tokens": ("tok-a",), **overrides}
    )
    return build_world(config)


def only_guild(world: World):
    (guild,) = world.guilds.values()
    return guild


def text_channels(guild):
    return [c for c in guild.channels if c.type == CHANNEL_TEXT]


def test_snowflakes_carry_their_time():
    flake = make_snowflake(1_700_000_000_123, increment=5)
    assert snowflake_ms(flake) == 1_700_000_000_123
    assert flake & 4095 == 5
    assert snowflake_ms(make_snowflake(DISCORD_EPOCH_MS)) == DISCORD_EPOCH_MS
    factory = SnowflakeFactory()
    same_ms = {factory.at(1_700_000_000_000) for _ in range(5000)}  # more than one ms can hold
    assert len(same_ms) == 5000
    live = [factory.next() for _ in range(100)]
    assert live == sorted(live) and len(set(live)) == 100


def test_flag_world_has_the_asked_shape():
    world = small_world(members=25, channels=6, messages=12, tokens=("tok-a", "tok-b"))
    guild = only_guild(world)
    assert guild.member_count == 25 + 2 == len(guild.members)
    assert guild.bots == {world.bot_for_token("tok-a").id, world.bot_for_token("tok-b").id}
    kinds = [c.type for c in guild.channels]
    assert kinds.count(CHANNEL_TEXT) == 6
    assert kinds.count(CHANNEL_VOICE) == 2
    assert kinds.count(CHANNEL_CATEGORY) >= 2
    for channel in text_channels(guild):
        assert len(channel.message_ids) == 12
        assert channel.parent_id is not None
    roles = {r.name: r for r in guild.roles}
    assert roles["@everyone"].id == guild.id and roles["@everyone"].position == 0
    assert roles["Admin"].hoist and roles["Admin"].color
    assert len({r.position for r in guild.roles}) == len(guild.roles)
    bot_roles = [r for r in guild.roles if r.tags and "bot_id" in r.tags]
    assert len(bot_roles) == 2 and all(r.managed for r in bot_roles)
    owner = guild.members[guild.owner_id]
    assert roles["Admin"].id in owner.roles and not owner.user.bot


def test_demo_token_is_used_without_tokens():
    world = build_world(SandboxConfig(members=3, channels=1, messages=1))
    assert world.bot_for_token(DEMO_TOKEN) is not None


def test_same_seed_same_world_other_seed_other_world():
    def snapshot(world: World) -> str:
        guild = only_guild(world)
        bot = world.bot_for_token("tok-a")
        payload = world.guild_create_payload(guild, bot, large_threshold=250)
        messages = [world.message_payload(m) for c in text_channels(guild) for m in c.history(100)]
        return json.dumps([payload, messages, world.application_payload(bot)], sort_keys=True)

    assert snapshot(small_world(seed=7)) == snapshot(small_world(seed=7))
    assert snapshot(small_world(seed=7)) != snapshot(small_world(seed=8))


def test_ten_thousand_members_generate_and_serialize():
    # How fast: benchmarks/sandbox_chunking.py and BENCHMARKS.md (no timing in tests).
    world = build_world(SandboxConfig(members=10_000, channels=10, messages=500, tokens=("tok-a",)))
    guild = only_guild(world)
    payloads = [world.member_payload(guild, m) for m in guild.members_sorted()]
    assert guild.member_count == 10_001 and len(payloads) == 10_001
    usernames = [m.user.username for m in guild.members.values() if not m.user.bot]
    assert len(set(usernames)) == len(usernames)
    assert all(2 <= len(u) <= 32 and u == u.lower() for u in usernames)


def test_ids_are_unique_snowflakes_in_the_past():
    world = small_world()
    guild = only_guild(world)
    ids = (
        [guild.id]
        + [r.id for r in guild.roles[1:]]
        + [c.id for c in guild.channels]
        + list(world.users)
    )
    for channel in guild.channels:
        ids.extend(channel.message_ids)
    assert len(ids) == len(set(ids))
    now = time.time() * 1000
    for flake in ids:
        assert DISCORD_EPOCH_MS < snowflake_ms(flake) <= ANCHOR_MS < now
    for member in guild.members.values():
        assert snowflake_ms(member.user.id) < member.joined_ms
        assert snowflake_ms(guild.id) <= member.joined_ms
    joins = [m.joined_ms for m in guild.members.values()]
    assert joins == sorted(joins), "members are kept in join order"


def test_history_is_realistic():
    world = small_world(members=60, channels=2, messages=400)
    guild = only_guild(world)
    channel = text_channels(guild)[0]
    messages = [channel.messages[i] for i in channel.message_ids]
    assert [m.id for m in messages] == sorted(m.id for m in messages)
    assert any(m.reference_id is not None for m in messages)
    assert any(m.edited_ms is not None and m.edited_ms > m.created_ms for m in messages)
    assert any(m.attachments for m in messages)
    assert any(m.embeds for m in messages)
    authors = {m.author.id for m in messages}
    assert len(authors) > 5 and authors <= set(guild.members)
    for message in messages:
        if message.reference_id is not None:
            assert message.reference_id < message.id and message.type == 19
            payload = world.message_payload(message)
            assert payload["referenced_message"]["id"] == str(message.reference_id)
            assert payload["message_reference"]["message_id"] == str(message.reference_id)


def test_history_cursors():
    world = small_world(members=10, channels=1, messages=50)
    channel = text_channels(only_guild(world))[0]
    ids = channel.message_ids
    assert [m.id for m in channel.history(5)] == ids[-5:][::-1]
    assert [m.id for m in channel.history(5, before=ids[10])] == ids[5:10][::-1]
    assert [m.id for m in channel.history(5, after=ids[10])] == ids[11:16][::-1]
    assert [m.id for m in channel.history(5, around=ids[20])] == ids[18:23][::-1]
    assert [m.id for m in channel.history(4, around=ids[20])] == ids[19:23][::-1]
    assert [m.id for m in channel.history(100, after=0)] == ids[::-1]
    assert channel.history(10, before=ids[0]) == []
    assert channel.history(10, after=ids[-1]) == []


def test_members_sorted_and_search():
    world = small_world(members=200)
    guild = only_guild(world)
    ordered = guild.members_sorted()
    assert [m.user.id for m in ordered] == sorted(guild.members)
    target = ordered[17].user.username
    found = guild.search_members(target[:3].upper(), 0)
    assert target in [m.user.username for m in found]
    assert all(
        m.user.username.startswith(target[:3]) or (m.nick or "").lower().startswith(target[:3])
        for m in found
    )
    assert len(guild.search_members("", 7)) == 7
    assert len(guild.search_members("", 0)) == guild.member_count
    assert guild.search_members("zzzz-no-such", 10) == []


def test_tokens_and_revocation():
    world = small_world(tokens=("tok-a", "tok-b"))
    bot = world.bot_for_token("tok-a")
    assert bot is not None and bot.user.bot and bot.application_id == bot.id
    assert world.bot_for_token("nope") is None
    assert world.guilds_of(bot) == [only_guild(world)]
    seen: list[WorldEvent] = []
    world.events.subscribe(seen.append)
    world.revoke_token(bot)
    assert world.bot_for_token("tok-a") is None
    assert seen == [
        WorldEvent(name="TOKEN_REVOKED", guild_id=None, data={}, intent=0, bot_id=bot.id)
    ]


def test_session_start_limit_spends_and_resets_with_the_clock():
    clock = FakeClock()
    world = small_world(session_start_limit=2, clock=clock)
    bot = world.bot_for_token("tok-a")
    assert world.session_start_limit_payload(bot) == {
        "total": 2,
        "remaining": 2,
        "reset_after": 0,
        "max_concurrency": 1,
    }
    assert world.spend_identify(bot) and world.spend_identify(bot)
    assert not world.spend_identify(bot)
    clock.now += 3600
    payload = world.session_start_limit_payload(bot)
    assert payload["remaining"] == 0 and payload["reset_after"] == (86400 - 3600) * 1000
    clock.now += 86400
    assert world.spend_identify(bot)
    assert world.session_start_limit_payload(bot)["remaining"] == 1


def test_payload_shapes_match_discord():
    world = small_world()
    guild = only_guild(world)
    bot = world.bot_for_token("tok-a")
    member = guild.members[guild.owner_id]
    payload = world.member_payload(guild, member)
    assert set(payload) >= {
        "user",
        "nick",
        "avatar",
        "roles",
        "joined_at",
        "premium_since",
        "deaf",
        "mute",
        "flags",
        "pending",
        "communication_disabled_until",
    }
    assert all(isinstance(r, str) for r in payload["roles"])
    assert dt.datetime.fromisoformat(payload["joined_at"]).tzinfo is not None
    assert "user" not in world.member_payload(guild, member, with_user=False)
    channel = world.channel_payload(text_channels(guild)[0])
    assert channel["guild_id"] == str(guild.id) and channel["type"] == 0
    assert channel["last_message_id"] == str(text_channels(guild)[0].last_message_id)
    role = world.role_payload(guild.roles[0])
    assert role["permissions"].isdigit() and role["id"] == str(guild.id)
    me = world.user_payload(bot.user, private=True)
    assert me["bot"] is True and me["discriminator"] != "0" and "mfa_enabled" in me
    app = world.application_payload(bot)
    assert app["id"] == str(bot.application_id) and app["owner"]["id"] == str(guild.owner_id)
    assert app["flags"] == bot.application_flags != 0


def test_guild_create_inlines_members_only_below_the_large_threshold():
    world = small_world(members=60)
    guild = only_guild(world)
    bot = world.bot_for_token("tok-a")
    small = world.guild_create_payload(guild, bot, large_threshold=250)
    assert small["large"] is False and len(small["members"]) == 61 == small["member_count"]
    large = world.guild_create_payload(guild, bot, large_threshold=50)
    assert large["large"] is True and [m["user"]["id"] for m in large["members"]] == [str(bot.id)]
    assert large["unavailable"] is False and large["threads"] == [] and large["presences"] == []
    assert large["joined_at"] == world.member_payload(guild, guild.members[bot.id])["joined_at"]
    assert {c["id"] for c in large["channels"]} == {str(c.id) for c in guild.channels}


def test_message_payload_without_content():
    world = small_world(members=60, messages=200)
    channel = text_channels(only_guild(world))[0]
    message = next(
        channel.messages[i] for i in channel.message_ids if channel.messages[i].attachments
    )
    full = world.message_payload(message)
    bare = world.message_payload(message, with_content=False)
    assert full["content"] and full["attachments"]
    assert (
        bare["content"] == ""
        and bare["attachments"] == []
        and bare["embeds"] == []
        and bare["components"] == []
    )
    assert bare["id"] == full["id"] and bare["author"] == full["author"]


def test_changes_are_dispatched_with_discord_shapes():
    world = small_world()
    guild = only_guild(world)
    events: list[WorldEvent] = []
    unsubscribe = world.events.subscribe(events.append)

    def boom(event: WorldEvent) -> None:
        raise RuntimeError("listener bug")

    world.events.subscribe(boom)
    user = world.create_user("newcomer", global_name="New Comer")
    member = world.add_member(guild, user)
    world.update_member(guild, member, nick="Newbie")
    channel = text_channels(guild)[0]
    message = world.create_message(
        channel, user, f"hi <@{guild.owner_id}>", mention_ids=[guild.owner_id]
    )
    world.edit_message(message, content="hello")
    world.delete_message(message)
    world.remove_member(guild, member)
    created = world.create_channel(guild, name="new-channel", parent_id=channel.parent_id)
    world.delete_channel(created)

    names = [e.name for e in events]
    assert names == [
        "GUILD_MEMBER_ADD",
        "GUILD_MEMBER_UPDATE",
        "MESSAGE_CREATE",
        "MESSAGE_UPDATE",
        "MESSAGE_DELETE",
        "GUILD_MEMBER_REMOVE",
        "CHANNEL_CREATE",
        "CHANNEL_DELETE",
    ]
    intents = [e.intent for e in events]
    assert (
        intents
        == [INTENT_GUILD_MEMBERS] * 2
        + [INTENT_GUILD_MESSAGES] * 3
        + [INTENT_GUILD_MEMBERS]
        + [INTENT_GUILDS] * 2
    )
    assert all(e.guild_id == guild.id for e in events)
    add, update, create, edit, delete, remove, ch_create, ch_delete = (e.data for e in events)
    assert add["guild_id"] == str(guild.id) and add["user"]["username"] == "newcomer"
    assert update["nick"] == "Newbie"
    assert create["content"] == f"hi <@{guild.owner_id}>" and create["guild_id"] == str(guild.id)
    assert create["member"]["joined_at"] and "user" not in create["member"]
    assert create["mentions"][0]["id"] == str(guild.owner_id)
    assert int(create["id"]) > max(m for c in guild.channels for m in c.message_ids)
    assert edit["content"] == "hello" and edit["edited_timestamp"] is not None
    assert delete == {"id": create["id"], "channel_id": str(channel.id), "guild_id": str(guild.id)}
    assert remove == {"guild_id": str(guild.id), "user": world.user_payload(user)}
    assert ch_create["name"] == "new-channel" and ch_delete["id"] == ch_create["id"]
    assert user.id not in guild.members and world.channel(int(ch_create["id"])) is None

    unsubscribe()
    unsubscribe()  # idempotent
    world.update_member(guild, guild.members[guild.owner_id], nick="Boss")
    assert len(events) == 8


def test_deleting_a_category_orphans_its_children():
    world = small_world()
    guild = only_guild(world)
    category = next(c for c in guild.channels if c.type == CHANNEL_CATEGORY)
    children = [c for c in guild.channels if c.parent_id == category.id]
    events: list[WorldEvent] = []
    world.events.subscribe(events.append)
    world.delete_channel(category)
    assert [e.name for e in events] == ["CHANNEL_DELETE"] + ["CHANNEL_UPDATE"] * len(children)
    assert all(c.parent_id is None for c in children)


def test_mentions_follow_allowed_mentions():
    world = small_world()
    guild = only_guild(world)
    owner = guild.owner_id
    role = guild.roles[-1]
    content = f"<@{owner}> <@!{owner}> <@&{role.id}> @everyone <@1>"
    assert world.resolve_mentions(guild, content) == ([owner], [role.id], True)
    assert world.resolve_mentions(guild, content, {"parse": []}) == ([], [], False)
    assert world.resolve_mentions(guild, content, {"parse": [], "users": [str(owner)]}) == (
        [owner],
        [],
        False,
    )
    assert world.resolve_mentions(guild, content, {"parse": ["roles"]}) == ([], [role.id], False)


SCENARIO = {
    "seed": 3,
    "bots": [
        {"token": "alpha", "username": "Alpha", "privileged_intents": ["GUILD_MEMBERS"]},
        {"token": "beta", "privileged_intents": []},
    ],
    "guilds": [
        {
            "name": "Alpha HQ",
            "members": 5,
            "channels": 2,
            "messages": 3,
            "bots": ["alpha"],
            "hidden_channels": ["staff-only"],
            "named_members": [
                {"username": "alice", "global_name": "Alice", "roles": ["Moderator"]}
            ],
        },
        {"name": "Shared", "members": 8, "channels": 1, "voice_channels": 0, "messages": 0},
    ],
}


def test_scenario_builds_several_guilds_and_bots():
    config = SandboxConfig(tokens=("ignored",))
    world = build_world_from_scenario(SCENARIO, config)
    alpha, beta = world.bot_for_token("alpha"), world.bot_for_token("beta")
    assert world.bot_for_token("ignored") is None
    assert alpha.user.username == "Alpha"
    assert alpha.granted_intents == INTENT_GUILD_MEMBERS and beta.granted_intents == 0
    assert not alpha.granted_intents & INTENT_MESSAGE_CONTENT
    hq, shared = world.guilds.values()
    assert [g.name for g in world.guilds_of(alpha)] == ["Alpha HQ", "Shared"]
    assert [g.name for g in world.guilds_of(beta)] == ["Shared"]
    assert hq.member_count == 5 + 1 + 1 and shared.member_count == 8 + 2
    assert not [c for c in shared.channels if c.type == CHANNEL_VOICE]
    alice = next(m for m in hq.members.values() if m.user.username == "alice")
    assert alice.user.global_name == "Alice"
    hidden = next(c for c in hq.channels if c.name == "staff-only")
    visible = next(c for c in hq.channels if c.name == "welcome")
    bot_member = hq.members[alpha.id]
    assert not world.channel_permissions(hq, bot_member, hidden) & PERM_VIEW_CHANNEL
    assert world.channel_permissions(hq, bot_member, visible) & PERM_VIEW_CHANNEL
    assert world.channel_permissions(hq, alice, hidden) & PERM_VIEW_CHANNEL


def build_world_from_scenario(raw: dict, config: SandboxConfig) -> World:
    from membersense.sandbox.generator import generate

    return generate(parse_scenario(raw, config), config)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"guilds": []}, "guilds"),
        ({"guilds": [{"members": -1}]}, "guilds[0].members"),
        ({"guilds": [{"bots": ["nope"]}]}, "guilds[0].bots[0]"),
        (
            {"bots": [{"token": "a", "privileged_intents": ["GUILDS"]}], "guilds": [{}]},
            "bots[0].privileged_intents[0]",
        ),
        ({"bots": [{"token": "a"}, {"token": "a"}], "guilds": [{}]}, "bots"),
        ({"guilds": [{"colour": 1}]}, "guilds[0]: unknown key(s) colour"),
        (
            {"guilds": [{"named_members": [{"username": "x", "roles": ["Boss"]}]}]},
            "guilds[0].named_members[0]",
        ),
    ],
)
def test_scenario_errors_say_where(raw, where):
    with pytest.raises(ScenarioError, match=__import__("re").escape(where)):
        parse_scenario(raw, SandboxConfig())


def test_scenario_file_from_config(tmp_path):
    path = tmp_path / "world.json"
    path.write_text(json.dumps(SCENARIO), encoding="utf-8")
    world = build_world(SandboxConfig(scenario=str(path)))
    assert len(world.guilds) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{nope", encoding="utf-8")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        build_world(SandboxConfig(scenario=str(bad)))


def test_world_is_identical_across_processes_and_hash_seeds():
    import hashlib
    import os
    import subprocess
    import sys

    program = (
        "import hashlib, json\n"
        "from membersense.sandbox.config import SandboxConfig\n"
        "from membersense.sandbox.generator import build_world\n"
        "w = build_world(SandboxConfig(members=300, channels=4, messages=40, tokens=('a', 'b'), seed=9))\n"
        "g = next(iter(w.guilds.values()))\n"
        "data = [w.guild_create_payload(g, w.bot_for_token('a'), large_threshold=1000),\n"
        "        [w.message_payload(m) for c in g.channels for m in c.history(100)],\n"
        "        [w.application_payload(b) for b in w.bots.values()]]\n"
        "print(hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", program],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1 and len(next(iter(digests))) == len(hashlib.sha256().hexdigest())
