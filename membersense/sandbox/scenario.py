"""The shape of a sandbox world: from CLI flags or from a scenario JSON file.

A scenario file describes several guilds and bots::

    {
      "seed": 42,
      "bots": [
        {"token": "alpha-token", "username": "Alpha",
         "privileged_intents": ["GUILD_MEMBERS", "MESSAGE_CONTENT"],
         "permissions": "125952", "session_start_limit": 1000}
      ],
      "guilds": [
        {"name": "Alpha HQ", "members": 200, "channels": 5, "voice_channels": 2, "messages": 50,
         "bots": ["alpha-token"],
         "hidden_channels": ["staff-only"], "read_only_channels": ["news"],
         "named_members": [{"username": "alice", "global_name": "Alice", "nick": null,
                            "roles": ["Moderator"], "status": "online"}]}
      ]
    }

Every key but ``guilds`` is optional.  Missing guild sizes default to the CLI flags
(``--members``/``--channels``/``--messages``); a guild's ``bots`` defaults to every bot;
``hidden_channels`` are extra text channels only moderators can view (bots get 403 Missing
Access), ``read_only_channels`` extra text channels where only moderators may post (bots
get 403 Missing Permissions);
without ``bots`` the ``--token`` tokens (or the demo token) become bots with every
privileged intent.  ``seed`` defaults to ``--seed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.models import (
    DEFAULT_BOT_PERMISSIONS,
    PRESENCE_STATUSES,
    PRIVILEGED_INTENT_NAMES,
    PRIVILEGED_INTENTS,
)

#: Roles every generated guild has, usable in ``named_members[].roles``.
ROLE_NAMES = (
    "Admin",
    "Moderator",
    "Member",
    "Server Booster",
    "Developer",
    "Artist",
    "Gamer",
    "Music Lover",
    "Event Ping",
)


class ScenarioError(ValueError):
    """A scenario file (or flags) that does not describe a valid world; the message says where."""


@dataclass
class BotSpec:
    """One bot to create."""

    token: str
    username: str | None = None
    privileged_intents: int = PRIVILEGED_INTENTS
    permissions: int = DEFAULT_BOT_PERMISSIONS
    session_start_limit: int | None = None


@dataclass
class NamedMemberSpec:
    """A member with a chosen name (added before the generated ones)."""

    username: str
    global_name: str | None = None
    nick: str | None = None
    roles: list[str] = field(default_factory=list)
    status: str = "online"


@dataclass
class GuildSpec:
    """One guild to generate."""

    name: str
    members: int
    channels: int
    messages: int
    voice_channels: int = 2
    bots: list[str] | None = None
    hidden_channels: list[str] = field(default_factory=list)
    read_only_channels: list[str] = field(default_factory=list)
    named_members: list[NamedMemberSpec] = field(default_factory=list)


@dataclass
class WorldSpec:
    """Everything the generator needs."""

    seed: int
    bots: list[BotSpec]
    guilds: list[GuildSpec]


def spec_from_config(config: SandboxConfig) -> WorldSpec:
    """The world the config asks for: its scenario file, or one guild shaped by the flags."""
    if config.scenario is not None:
        try:
            with open(config.scenario, encoding="utf-8") as fh:
                raw = json.load(fh)
        except OSError as exc:
            raise ScenarioError(f"cannot read scenario {config.scenario}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"scenario {config.scenario} is not valid JSON: {exc}") from exc
        return parse_scenario(raw, config)
    return WorldSpec(
        seed=config.seed,
        bots=[BotSpec(token=t) for t in config.effective_tokens],
        guilds=[
            GuildSpec(
                name="MemberSense Sandbox",
                members=config.members,
                channels=config.channels,
                messages=config.messages,
            )
        ],
    )


def _int(value: Any, where: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ScenarioError(f"{where}: must be an integer {bound}")
    return value


def _str(value: Any, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where}: must be a non-empty string")
    return value


def _object(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: must be an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: must be a list")
    return value


def _intents(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value & ~PRIVILEGED_INTENTS or value < 0:
            raise ScenarioError(
                f"{where}: only privileged intent bits (1<<1, 1<<8, 1<<15) can be granted"
            )
        return value
    bits = 0
    for i, name in enumerate(_list(value, where)):
        if name not in PRIVILEGED_INTENT_NAMES:
            raise ScenarioError(
                f"{where}[{i}]: must be one of {', '.join(PRIVILEGED_INTENT_NAMES)}"
            )
        bits |= PRIVILEGED_INTENT_NAMES[name]
    return bits


def _bot(raw: Any, where: str) -> BotSpec:
    obj = _object(
        raw,
        where,
        {"token", "username", "privileged_intents", "permissions", "session_start_limit"},
    )
    token = _str(obj.get("token"), f"{where}.token")
    assert token is not None
    if any(c.isspace() for c in token):
        raise ScenarioError(f"{where}.token: must not contain whitespace")
    spec = BotSpec(
        token=token, username=_str(obj.get("username"), f"{where}.username", optional=True)
    )
    if "privileged_intents" in obj:
        spec.privileged_intents = _intents(obj["privileged_intents"], f"{where}.privileged_intents")
    if "permissions" in obj:
        perms = obj["permissions"]
        if isinstance(perms, str) and perms.isdigit():
            perms = int(perms)
        spec.permissions = _int(perms, f"{where}.permissions")
    if "session_start_limit" in obj:
        spec.session_start_limit = _int(obj["session_start_limit"], f"{where}.session_start_limit")
    return spec


def _named_member(raw: Any, where: str) -> NamedMemberSpec:
    obj = _object(raw, where, {"username", "global_name", "nick", "roles", "status"})
    username = _str(obj.get("username"), f"{where}.username")
    assert username is not None
    if not 2 <= len(username) <= 32:
        raise ScenarioError(f"{where}.username: must be 2-32 characters")
    spec = NamedMemberSpec(
        username=username,
        global_name=_str(obj.get("global_name"), f"{where}.global_name", optional=True),
        nick=_str(obj.get("nick"), f"{where}.nick", optional=True),
    )
    for i, role in enumerate(_list(obj.get("roles", []), f"{where}.roles")):
        if role not in ROLE_NAMES:
            raise ScenarioError(f"{where}.roles[{i}]: must be one of {', '.join(ROLE_NAMES)}")
        spec.roles.append(role)
    status = obj.get("status", "online")
    if status not in PRESENCE_STATUSES:
        raise ScenarioError(f"{where}.status: must be one of {', '.join(PRESENCE_STATUSES)}")
    spec.status = status
    return spec


def _guild(raw: Any, where: str, config: SandboxConfig, tokens: list[str]) -> GuildSpec:
    obj = _object(
        raw,
        where,
        {
            "name",
            "members",
            "channels",
            "voice_channels",
            "messages",
            "bots",
            "hidden_channels",
            "read_only_channels",
            "named_members",
        },
    )
    name = _str(obj.get("name", "Sandbox Guild"), f"{where}.name")
    assert name is not None
    spec = GuildSpec(
        name=name,
        members=_int(obj.get("members", config.members), f"{where}.members", maximum=1_000_000),
        channels=_int(obj.get("channels", config.channels), f"{where}.channels", maximum=400),
        messages=_int(obj.get("messages", config.messages), f"{where}.messages", maximum=1_000_000),
        voice_channels=_int(obj.get("voice_channels", 2), f"{where}.voice_channels", maximum=50),
    )
    if "bots" in obj:
        spec.bots = []
        for i, token in enumerate(_list(obj["bots"], f"{where}.bots")):
            if token not in tokens:
                raise ScenarioError(f"{where}.bots[{i}]: not the token of a bot in 'bots'")
            spec.bots.append(token)
    for key in ("hidden_channels", "read_only_channels"):
        for i, name in enumerate(_list(obj.get(key, []), f"{where}.{key}")):
            channel_name = _str(name, f"{where}.{key}[{i}]")
            assert channel_name is not None
            getattr(spec, key).append(channel_name)
    for i, member in enumerate(_list(obj.get("named_members", []), f"{where}.named_members")):
        spec.named_members.append(_named_member(member, f"{where}.named_members[{i}]"))
    return spec


def parse_scenario(raw: Any, config: SandboxConfig) -> WorldSpec:
    """Validate a decoded scenario document and turn it into a :class:`WorldSpec`."""
    obj = _object(raw, "scenario", {"seed", "bots", "guilds"})
    seed = _int(obj.get("seed", config.seed), "scenario.seed", minimum=-(2**63))
    if "bots" in obj:
        bots = [_bot(b, f"bots[{i}]") for i, b in enumerate(_list(obj["bots"], "bots"))]
        if not bots:
            raise ScenarioError("bots: must name at least one bot")
    else:
        bots = [BotSpec(token=t) for t in config.effective_tokens]
    tokens = [b.token for b in bots]
    if len(set(tokens)) != len(tokens):
        raise ScenarioError("bots: tokens must be distinct")
    guilds_raw = _list(obj.get("guilds"), "guilds") if "guilds" in obj else None
    if not guilds_raw:
        raise ScenarioError("guilds: must list at least one guild")
    guilds = [_guild(g, f"guilds[{i}]", config, tokens) for i, g in enumerate(guilds_raw)]
    return WorldSpec(seed=seed, bots=bots, guilds=guilds)
