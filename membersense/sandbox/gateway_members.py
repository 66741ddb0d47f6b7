"""REQUEST_GUILD_MEMBERS (op 8): which members a request selects, how they are cut
into GUILD_MEMBERS_CHUNK dispatches, and Discord's 30 s cooldown on "all members".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from membersense.sandbox.gateway_protocol import (
    CHUNK_SIZE,
    MAX_QUERY_MEMBERS,
    MAX_USER_IDS,
    dumps,
    parse_snowflake,
    valid_nonce,
)
from membersense.sandbox.models import INTENT_GUILD_MEMBERS, INTENT_GUILD_PRESENCES

if TYPE_CHECKING:
    from membersense.sandbox.world import Bot, Guild, World


class BadRequest(Exception):
    """The op 8 payload is malformed (Discord closes with 4001 / 4013; ``code`` says which)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class MemberRequest:
    """A parsed op 8 payload."""

    guild_id: int
    query: str | None
    limit: int
    user_ids: tuple[int, ...] | None
    presences: bool
    nonce: str | None

    @property
    def wants_everyone(self) -> bool:
        """``query: ""`` with ``limit: 0``: the whole member list (rate limited, GUILD_MEMBERS only)."""
        return self.user_ids is None and self.query == "" and self.limit == 0


def parse_request(
    d: Any, *, close_invalid_payload: int, close_invalid_intents: int, intents: int
) -> MemberRequest:
    """Validate an op 8 ``d`` against Discord's rules for a session with ``intents``."""
    if not isinstance(d, dict):
        raise BadRequest(close_invalid_payload, "Request Guild Members needs an object")
    raw_guild = d.get("guild_id")
    if isinstance(raw_guild, list):  # Discord accepts a list, but only of one guild
        if len(raw_guild) != 1:
            raise BadRequest(close_invalid_payload, "Only one guild_id per request")
        raw_guild = raw_guild[0]
    guild_id = parse_snowflake(raw_guild)
    if guild_id is None:
        raise BadRequest(close_invalid_payload, "guild_id must be a snowflake")

    user_ids: tuple[int, ...] | None = None
    raw_ids = d.get("user_ids")
    if raw_ids is not None:
        if not isinstance(raw_ids, list):
            raw_ids = [raw_ids]
        parsed = [parse_snowflake(u) for u in raw_ids]
        if any(u is None for u in parsed):
            raise BadRequest(close_invalid_payload, "user_ids must be snowflakes")
        user_ids = tuple(dict.fromkeys(u for u in parsed if u is not None))[:MAX_USER_IDS]

    query = d.get("query")
    if query is not None and not isinstance(query, str):
        raise BadRequest(close_invalid_payload, "query must be a string")
    if user_ids is None and query is None:
        raise BadRequest(close_invalid_payload, "Request Guild Members needs query or user_ids")
    limit = d.get("limit", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise BadRequest(close_invalid_payload, "limit must be a non-negative integer")

    if user_ids is None and query == "" and not intents & INTENT_GUILD_MEMBERS:
        # Discord: "GUILD_MEMBERS intent is required to request the entire member list".
        raise BadRequest(
            close_invalid_intents, "Requesting the member list needs the GUILD_MEMBERS intent"
        )

    presences = d.get("presences") is True and bool(intents & INTENT_GUILD_PRESENCES)
    return MemberRequest(guild_id, query, limit, user_ids, presences, valid_nonce(d.get("nonce")))


def select_members(guild: Guild, request: MemberRequest) -> tuple[list[Any], list[int]]:
    """The members ``request`` asks for, in order, and the requested user ids not in the guild."""
    if request.user_ids is not None:
        found, not_found = [], []
        for user_id in request.user_ids:
            member = guild.members.get(user_id)
            if member is None:
                not_found.append(user_id)
            else:
                found.append(member)
        return found, not_found
    assert request.query is not None
    if request.query == "":
        members = list(guild.members.values())
        return (members[: request.limit] if request.limit else members), []
    limit = min(request.limit or MAX_QUERY_MEMBERS, MAX_QUERY_MEMBERS)
    return guild.search_members(request.query, limit), []


def chunk_payloads(
    world: World, guild: Guild, request: MemberRequest, members: list[Any], not_found: list[int]
) -> Iterator[str]:
    """Serialised ``d`` of each GUILD_MEMBERS_CHUNK answering ``request`` (at least one)."""
    count = max(1, math.ceil(len(members) / CHUNK_SIZE))
    guild_id = str(guild.id)
    serialize = world.member_payload
    for index in range(count):
        part = members[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]
        d: dict[str, Any] = {
            "guild_id": guild_id,
            "members": [serialize(guild, member) for member in part],
            "chunk_index": index,
            "chunk_count": count,
        }
        if request.user_ids is not None:
            d["not_found"] = [str(u) for u in not_found] if index == 0 else []
        if request.presences:
            # Discord leaves offline members out of ``presences``.
            d["presences"] = [
                world.presence_payload(guild, m) for m in part if m.status != "offline"
            ]
        if request.nonce is not None:
            d["nonce"] = request.nonce
        yield dumps(d)


def rate_limited_payload(request: MemberRequest, retry_after: float) -> str:
    """Serialised ``d`` of the RATE_LIMITED dispatch refusing ``request``."""
    meta: dict[str, Any] = {"guild_id": str(request.guild_id)}
    if request.nonce is not None:
        meta["nonce"] = request.nonce
    return dumps({"opcode": 8, "retry_after": round(retry_after, 3), "meta": meta})


class MemberRequestCooldown:
    """Discord's limit of one "all members" request per guild per bot every ``cooldown_s``."""

    def __init__(self, clock: Callable[[], float], cooldown_s: float) -> None:
        self._clock = clock
        self._cooldown_s = cooldown_s
        self._last: dict[tuple[int, int], float] = {}

    def try_acquire(self, bot: Bot, guild_id: int) -> float:
        """0.0 when the request may go ahead (and starts the cooldown), else seconds to wait."""
        now = self._clock()
        key = (bot.id, guild_id)
        last = self._last.get(key)
        if last is not None and now - last < self._cooldown_s:
            return self._cooldown_s - (now - last)
        self._last[key] = now
        return 0.0
