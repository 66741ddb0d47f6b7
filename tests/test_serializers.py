"""Serializers (one per Discord object) and member-list snapshots."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from membersense.discord.serializers import (
    MemberRecord,
    RoleNames,
    RoleRecord,
    avatar_url,
    guild_icon_url,
    js_timestamp,
    member_record,
    serialize_member,
    serialize_message,
)
from membersense.discord.snapshot import BLOCK_MEMBERS, build_snapshot

GUILD = 900
ROLES = [
    RoleRecord(GUILD, "@everyone", 0),
    RoleRecord(901, "Member", 1, 0x95A5A6),
    RoleRecord(902, "Moderator", 5, 0x3498DB),
    RoleRecord(903, "Admin", 9),  # no colour: names take the next role's
    RoleRecord(904, "Also five", 5),  # same position as Moderator: the higher id ranks higher
]


def record(user_id: int, **changes: object) -> MemberRecord:
    base = MemberRecord(
        id=user_id,
        username=f"user{user_id}",
        global_name=None,
        nick=None,
        avatar=None,
        guild_avatar=None,
        discriminator="0",
        role_ids=(),
        joined_at=None,
        bot=False,
    )
    return base._replace(**changes)  # type: ignore[arg-type]


def test_avatar_urls_prefer_guild_then_user_then_default() -> None:
    assert avatar_url(5, "abc") == "https://cdn.discordapp.com/avatars/5/abc.png?size=1024"
    assert avatar_url(5, "a_abc").endswith("/avatars/5/a_abc.gif?size=1024")
    assert avatar_url(5, "abc", guild_id=7, guild_avatar="def") == (
        "https://cdn.discordapp.com/guilds/7/users/5/avatars/def.png?size=1024"
    )
    user_id = 123456789012345678
    assert avatar_url(user_id, None) == (
        f"https://cdn.discordapp.com/embed/avatars/{(user_id >> 22) % 6}.png"
    )
    assert avatar_url(user_id, None, discriminator="0007") == (
        "https://cdn.discordapp.com/embed/avatars/2.png"
    )


def test_guild_icon_url() -> None:
    assert guild_icon_url(1, None) is None
    assert guild_icon_url(1, "a_x") == "https://cdn.discordapp.com/icons/1/a_x.gif?size=1024"


def test_js_timestamp_matches_javascript_date_tojson() -> None:
    moment = datetime(2024, 3, 5, 6, 7, 8, 912345, tzinfo=UTC)
    assert js_timestamp(moment) == "2024-03-05T06:07:08.912Z"
    east = moment.astimezone(timezone(timedelta(hours=2)))
    assert js_timestamp(east) == "2024-03-05T06:07:08.912Z"
    assert js_timestamp(None) is None


@pytest.mark.parametrize(
    ("discord", "javascript"),
    [
        ("2024-03-05T06:07:08.912345+00:00", "2024-03-05T06:07:08.912Z"),
        ("2024-03-05T06:07:08.9+00:00", "2024-03-05T06:07:08.900Z"),
        ("2024-03-05T06:07:08+00:00", "2024-03-05T06:07:08.000Z"),
        ("2024-03-05T08:07:08.912+02:00", "2024-03-05T06:07:08.912Z"),
        ("not a date", None),
    ],
)
def test_js_timestamp_of_discords_text(discord: str, javascript: str | None) -> None:
    assert js_timestamp(discord) == javascript


def test_member_records_come_from_discords_json_and_updates_keep_the_rest() -> None:
    payload = {
        "user": {
            "id": "42",
            "username": "user42",
            "global_name": "G",
            "avatar": "h",
            "discriminator": "0",
            "bot": True,
        },
        "nick": "n",
        "avatar": "ga",
        "roles": ["901", "903"],
        "joined_at": "2023-01-02T03:04:05.000000+00:00",
    }
    full = member_record(payload)
    assert full == MemberRecord(
        42, "user42", "G", "n", "h", "ga", "0", (901, 903), "2023-01-02T03:04:05.000000+00:00", True
    )
    partial = member_record({"user": {"id": "42", "username": "renamed"}, "roles": ["902"]}, full)
    assert partial == full._replace(username="renamed", role_ids=(902,))
    unnicked = member_record({"user": {"id": "42"}, "nick": None}, full)
    assert unnicked.nick is None and unnicked.global_name == "G"


def test_role_names_rank_by_position_then_id_with_everyone_last() -> None:
    roles = RoleNames(GUILD, ROLES)
    assert roles.of((901, 902, 903, 904)) == (
        "Admin",
        "Also five",
        "Moderator",
        "Member",
        "@everyone",
    )
    assert roles.of(()) == ("@everyone",)
    assert roles.of((999, GUILD)) == ("@everyone",)  # unknown ids and @everyone itself skipped
    assert roles.of((903, 901)) is roles.of((903, 901))  # ranked once


def test_member_fields() -> None:
    joined = datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
    member = record(
        42,
        global_name="Forty Two",
        nick="fortytwo",
        avatar="hash",
        role_ids=(901, 903),
        joined_at=joined.isoformat(),
        bot=True,
    )
    assert serialize_member(member, RoleNames(GUILD, ROLES), GUILD) == {
        "id": "42",
        "username": "user42",
        "displayName": "fortytwo",
        "avatar": "https://cdn.discordapp.com/avatars/42/hash.png?size=1024",
        "roles": ("Admin", "Member", "@everyone"),
        "role": "Admin",
        "joinedAt": "2023-01-02T03:04:05.000Z",
        "bot": True,
        "roleColor": "#95a5a6",
    }
    plain = serialize_member(record(43), RoleNames(GUILD, ROLES), GUILD)
    assert plain["displayName"] == "user43" and plain["role"] == "@everyone"
    assert plain["roleColor"] is None
    assert (
        serialize_member(record(45, role_ids=(901, 902, 903)), RoleNames(GUILD, ROLES), GUILD)[
            "roleColor"
        ]
        == "#3498db"
    )
    assert (
        serialize_member(record(44, global_name="G"), RoleNames(GUILD, ROLES), GUILD)["displayName"]
        == "G"
    )


def test_message_fields_from_discord_json() -> None:
    payload = {
        "id": "1100",
        "channel_id": "5",
        "content": "hello ✨",
        "author": {
            "id": "42",
            "username": "user42",
            "global_name": "Forty Two",
            "avatar": None,
            "discriminator": "0",
        },
        "timestamp": "2024-03-05T06:07:08.912000+00:00",
        "edited_timestamp": "2024-03-05T06:08:00+00:00",
        "attachments": [
            {
                "id": "7",
                "filename": "a.png",
                "url": "https://cdn/a.png",
                "size": 10,
                "content_type": "image/png",
            }
        ],
        "embeds": [{}, {}],
        "message_reference": {"message_id": "1000", "channel_id": "5"},
    }
    message = serialize_message(payload)
    assert message == {
        "id": "1100",
        "channelId": "5",
        "content": "hello ✨",
        "author": {
            "id": "42",
            "username": "user42",
            "name": "Forty Two",
            "avatar": avatar_url(42, None),
        },
        "timestamp": 1709618828912,
        "editedTimestamp": 1709618880000,
        "attachments": [
            {
                "id": "7",
                "filename": "a.png",
                "url": "https://cdn/a.png",
                "size": 10,
                "contentType": "image/png",
            }
        ],
        "embeds": 2,
        "replyTo": "1000",
    }
    bare = serialize_message(
        {
            "id": "1",
            "author": {"id": "2", "username": "u"},
            "timestamp": "2024-01-01T00:00:00+00:00",
        }
    )
    assert bare["author"]["name"] == "u" and bare["editedTimestamp"] is None
    assert bare["attachments"] == [] and bare["embeds"] == 0 and bare["replyTo"] is None


def _snapshot(ids: list[int], version: int = 1, **options: int):
    members = [record(i, nick="é" if i % 2 else None) for i in ids]
    return build_snapshot(version, GUILD, members, RoleNames(GUILD, ROLES), **options)


def _ids(body: bytes) -> list[str]:
    return [m["id"] for m in json.loads(body)]


def test_snapshot_is_sorted_by_id_and_pages_are_slices_of_it() -> None:
    ids = [50, 10, 40, 20, 30]
    snapshot = _snapshot(ids)
    assert snapshot.document.body is not None
    everyone = json.loads(snapshot.document.body)
    assert [m["id"] for m in everyone] == ["10", "20", "30", "40", "50"]
    assert [json.loads(f) for f in snapshot.fragments()] == everyone

    def page(limit, after):
        return _ids(snapshot.page(limit, after).plain())

    assert page(2, None) == ["10", "20"]
    assert page(2, 20) == ["30", "40"]
    assert page(2, 25) == ["30", "40"]
    assert page(10, 40) == ["50"]
    assert page(10, 50) == []
    assert page(None, 30) == ["40", "50"]
    assert snapshot.page(None, None) is snapshot.document
    assert snapshot.page(1000, None) is snapshot.document
    assert snapshot.page(2, 20).etag != snapshot.page(2, 30).etag


def test_snapshot_etag_follows_content() -> None:
    first = _snapshot([1, 2, 3], version=1)
    same = _snapshot([3, 2, 1], version=2)
    other = _snapshot([1, 2, 4], version=3)
    assert first.document.etag == same.document.etag
    assert first.document.etag != other.document.etag


def test_empty_snapshot() -> None:
    snapshot = _snapshot([])
    assert snapshot.document.body == b"[]"
    assert snapshot.page(5, None).body == b"[]"
    assert gzip.decompress(snapshot.document.gzip or b"") == b"[]"


def test_the_whole_list_is_kept_gzipped_and_pages_are_plain() -> None:
    big = _snapshot(list(range(1, 200)))
    assert big.document.gzip is not None
    assert gzip.decompress(big.document.gzip) == big.document.body
    assert big.page(10, None).gzip is None


def test_a_large_list_keeps_only_gzip_and_pages_inflate_only_their_blocks() -> None:
    ids = list(range(1, 3 * BLOCK_MEMBERS + 57))
    kept = _snapshot(ids)
    compressed_only = _snapshot(ids, plain_limit=1000)
    assert compressed_only.document.body is None and kept.document.body is not None
    assert compressed_only.document.etag == kept.document.etag
    # Every block can be inflated on its own (the stream is fully flushed between them).
    blocks = compressed_only.blocks
    for b in range(len(blocks) - 1):
        zlib.decompressobj(-zlib.MAX_WBITS).decompress(
            compressed_only.document.gzip[blocks[b] : blocks[b + 1]]
        )  # type: ignore[index]
    # The whole body, streamed or at once, is the plain one.
    assert compressed_only.document.plain() == kept.document.body
    assert b"".join(compressed_only.document.chunks()) == kept.document.body
    for limit, after in [
        (1, None),
        (5, BLOCK_MEMBERS - 2),
        (BLOCK_MEMBERS, 1),
        (1000, 2 * BLOCK_MEMBERS),
        (7, 3 * BLOCK_MEMBERS + 50),
        (3, 10**6),
        (None, BLOCK_MEMBERS + 3),
    ]:
        assert compressed_only.page(limit, after).body == kept.page(limit, after).body, (
            limit,
            after,
        )
