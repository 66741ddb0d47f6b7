"""Builds a deterministic :class:`World` from a :class:`WorldSpec` (same seed, same world).

Everything is derived from one ``random.Random(seed)`` and a fixed anchor date, never
from the wall clock, so ids, names, timestamps and history are identical on every run.
"""

from __future__ import annotations

import itertools
import math
import random

from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.models import (
    CHANNEL_CATEGORY,
    CHANNEL_TEXT,
    CHANNEL_VOICE,
    DEFAULT_EVERYONE_PERMISSIONS,
    MESSAGE_REPLY,
    PERM_ADMINISTRATOR,
    PERM_BAN_MEMBERS,
    PERM_KICK_MEMBERS,
    PERM_MANAGE_MESSAGES,
    PERM_MANAGE_NICKNAMES,
    PERM_MENTION_EVERYONE,
    PERM_SEND_MESSAGES,
    PERM_VIEW_AUDIT_LOG,
    PERM_VIEW_CHANNEL,
    Bot,
    Channel,
    Guild,
    Member,
    Message,
    Overwrite,
    Role,
    User,
)
from membersense.sandbox.scenario import GuildSpec, WorldSpec, spec_from_config
from membersense.sandbox.world import World

#: Generated history ends here (2025-06-01T00:00:00Z), always in the past.
ANCHOR_MS = 1748736000000
_DAY_MS = 86_400_000
#: Generated humans joined before this, so every generated message has an author who was a member.
_HISTORY_DAYS = 30

_FIRST = (
    "alex ava ben chloe dan emma finn grace hana ivan jade kai leo mia noah olga priya quinn rosa sam tara "
    "uma victor wren xena yuki zoe aria bruno cyrus daria eli farah gus hugo iris jonas kira liam maya nico "
    "omar pia rafael sofia theo ula vera will yara zain amelie bjorn carmen dmitri elena felix greta haruto "
    "ines jakob kenji lucia mateo nadia oskar paula ravi sanna tomas ugo valentina wei ximena yusuf zora"
).split()
_LAST = (
    "smith garcia chen muller rossi silva kim novak ivanova tanaka dubois jensen kowalski haddad okafor "
    "nguyen patel santos weber larsen moreau costa berg fischer romero sato lindqvist mendes petrov "
    "schmidt laurent"
).split()
_ADJ = (
    "swift quiet lucky cosmic fuzzy brave sleepy pixel neon crispy golden silent rapid wild mellow tiny "
    "grumpy sunny frosty electric lazy clever shadow velvet"
).split()
_NOUN = (
    "fox otter panda falcon comet maple byte noodle tiger raven koala ember pebble nova moss lynx badger "
    "cactus wave orbit llama gecko pancake walrus"
).split()
_TOPICS = (
    "the release",
    "the new build",
    "tonight's stream",
    "the meetup",
    "my setup",
    "that bug",
    "the docs",
    "the event",
    "the patch notes",
    "the playlist",
    "the art contest",
    "the roadmap",
    "the server rules",
    "the weekly challenge",
    "the API",
    "the tutorial",
)
_OPENERS = (
    "honestly",
    "ok so",
    "quick question:",
    "fwiw",
    "lol",
    "update:",
    "hey all,",
    "not gonna lie",
    "psa:",
    "good morning!",
    "brb but",
    "random thought:",
)
_VERBS = (
    "loved",
    "just tried",
    "can't get past",
    "finally fixed",
    "am reading",
    "keep thinking about",
    "wrote up notes on",
    "have questions about",
    "shared a clip of",
    "am hyped for",
)
_ENDINGS = (
    "",
    "",
    "",
    " :)",
    " 🎉",
    " anyone else?",
    " thoughts?",
    " 👀",
    " haha",
    "!!",
    " (again)",
    " 🙏",
)

_TEXT_CHANNELS = (
    "welcome",
    "announcements",
    "general",
    "off-topic",
    "introductions",
    "memes",
    "media",
    "help",
    "feedback",
    "dev-chat",
    "showcase",
    "music",
    "gaming",
    "bot-commands",
    "events",
    "random",
    "resources",
    "questions",
    "art",
    "pets",
)
_CATEGORIES = ("Information", "General", "Community", "Projects")
_VOICE_CHANNELS = ("General", "Gaming", "Music", "Study Room", "AFK")
_BOT_NAMES = ("Sentinel", "Archivist", "Herald", "Scribe", "Beacon", "Warden", "Courier", "Oracle")

# (name, colour, hoist, mentionable, permissions) from the bottom up; Booster and the bots'
# roles are inserted between Member and Moderator.
_COSMETIC_ROLES = (
    ("Event Ping", 0xF1C40F, False, True, 0),
    ("Music Lover", 0x1ABC9C, False, False, 0),
    ("Gamer", 0x9B59B6, False, False, 0),
    ("Artist", 0xE67E22, False, False, 0),
    ("Developer", 0x3498DB, False, False, 0),
)
_MODERATOR_PERMS = (
    PERM_KICK_MEMBERS
    | PERM_BAN_MEMBERS
    | PERM_MANAGE_MESSAGES
    | PERM_MANAGE_NICKNAMES
    | PERM_VIEW_AUDIT_LOG
    | PERM_MENTION_EVERYONE
)


def build_world(config: SandboxConfig) -> World:
    """The world ``config`` describes (its scenario file, or one guild shaped by the flags)."""
    return generate(spec_from_config(config), config)


def generate(spec: WorldSpec, config: SandboxConfig) -> World:
    """Build a world from ``spec``; identical specs give identical worlds."""
    return _Generator(spec, config).run()


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


class _Generator:
    def __init__(self, spec: WorldSpec, config: SandboxConfig) -> None:
        self.spec = spec
        self.config = config
        self.rng = random.Random(spec.seed)
        self.world = World(config)
        self.ids = self.world.snowflakes

    def run(self) -> World:
        rng = self.rng
        bots: dict[str, Bot] = {}
        for index, bot_spec in enumerate(self.spec.bots):
            created = ANCHOR_MS - rng.randint(200, 900) * _DAY_MS + rng.randint(0, _DAY_MS)
            name = bot_spec.username or (
                _BOT_NAMES[index % len(_BOT_NAMES)]
                + ("" if index < len(_BOT_NAMES) else str(index))
            )
            user = User(
                id=self.ids.at(created),
                username=name,
                avatar=_hex(rng, 128),
                discriminator=f"{rng.randint(1, 9999):04d}",
                bot=True,
            )
            limit = bot_spec.session_start_limit
            if limit is None:
                limit = self.config.session_start_limit
            bots[bot_spec.token] = self.world.add_bot(
                Bot(
                    token=bot_spec.token,
                    user=user,
                    application_id=user.id,
                    owner_id=0,
                    granted_intents=bot_spec.privileged_intents,
                    session_start_total=limit,
                    session_starts_remaining=limit,
                    verify_key=_hex(rng, 256),
                )
            )
        for guild_spec in self.spec.guilds:
            tokens = (
                guild_spec.bots
                if guild_spec.bots is not None
                else [b.token for b in self.spec.bots]
            )
            self._guild(guild_spec, [bots[t] for t in tokens])
        # An application's owner is the owner of the first guild its bot is in.
        for bot in bots.values():
            guilds = self.world.guilds_of(bot)
            bot.owner_id = guilds[0].owner_id if guilds else bot.id
        return self.world

    # ------------------------------------------------------------------ names
    def _username(self) -> str:
        rng = self.rng
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        style = rng.randrange(6)
        if style == 0:
            name = first + last
        elif style == 1:
            name = f"{first}.{last}"
        elif style == 2:
            name = f"{first}_{rng.choice(_NOUN)}"
        elif style == 3:
            name = f"{rng.choice(_ADJ)}{rng.choice(_NOUN)}{rng.randint(1, 99)}"
        elif style == 4:
            name = f"{first}{rng.randint(70, 2010) % 100:02d}"
        else:
            name = f"{rng.choice(_ADJ)}_{first}"
        name = name[:28]
        while self.world.username_taken(name) or len(name) < 2:
            name = f"{name[:28]}{rng.randint(0, 9999)}"[:32]
        return name

    def _human(self, created_ms: int) -> User:
        rng = self.rng
        username = self._username()
        roll = rng.random()
        base = username.split(".")[0].split("_")[0].rstrip("0123456789")
        if roll < 0.45:
            global_name = base.capitalize() or username
        elif roll < 0.75:
            global_name = f"{rng.choice(_FIRST).capitalize()} {rng.choice(_LAST).capitalize()}"
        else:
            global_name = None
        avatar = None
        if rng.random() < 0.85:
            avatar = ("a_" if rng.random() < 0.04 else "") + _hex(rng, 128)
        return self.world.add_user(
            User(
                id=self.ids.at(created_ms),
                username=username,
                global_name=global_name,
                avatar=avatar,
            )
        )

    # ------------------------------------------------------------------ guild
    def _guild(self, spec: GuildSpec, bots: list[Bot]) -> Guild:
        rng, ids = self.rng, self.ids
        created = ANCHOR_MS - rng.randint(500, 1500) * _DAY_MS
        guild = Guild(
            id=ids.at(created),
            name=spec.name,
            owner_id=0,
            icon=_hex(rng, 128),
            description=f"{spec.name}: a generated guild of the MemberSense Discord sandbox.",
        )
        roles, bot_roles = self._roles(guild, created, bots)
        bot_role_ids = {r.id for r in bot_roles.values()}
        by_name = {r.name: r for r in roles if r.id not in bot_role_ids}
        history_start = ANCHOR_MS - _HISTORY_DAYS * _DAY_MS

        # Members: who they are, then insertion in join order.
        entries: list[Member] = []
        human_count = spec.members + len(spec.named_members)
        for index in range(human_count):
            account = rng.randint(1451606400000, created + 30 * _DAY_MS)  # 2016-01-01 ..
            joined = (
                created + 60_000
                if index == 0
                else rng.randint(max(created, account) + 60_000, history_start - _DAY_MS)
            )
            if index < len(spec.named_members):
                named = spec.named_members[index]
                user = self.world.add_user(
                    User(
                        id=ids.at(account),
                        username=named.username,
                        global_name=named.global_name,
                        avatar=_hex(rng, 128),
                    )
                )
                member = Member(
                    user=user,
                    joined_ms=joined,
                    nick=named.nick,
                    status=named.status,
                    roles=[by_name[n].id for n in named.roles],
                )
            else:
                user = self._human(account)
                member = Member(user=user, joined_ms=joined, status=self._status())
                member.roles = self._member_roles(by_name)
                if rng.random() < 0.12:
                    member.nick = self._nick(user)
                if rng.random() < 0.02:
                    member.roles.append(by_name["Server Booster"].id)
                    member.premium_since_ms = rng.randint(joined, ANCHOR_MS)
            entries.append(member)
        if entries:
            owner = entries[0]
            guild.owner_id = owner.user.id
            if by_name["Admin"].id not in owner.roles:
                owner.roles.insert(0, by_name["Admin"].id)
            # A couple more admins and a few moderators, as real communities have.
            for member in entries[1:3]:
                member.roles.append(by_name["Admin"].id)
            for member in entries[3 : 3 + max(1, human_count // 100)]:
                member.roles.append(by_name["Moderator"].id)
        else:
            guild.owner_id = bots[0].id if bots else 0
        for index, bot in enumerate(bots):
            entries.append(
                Member(
                    user=bot.user,
                    joined_ms=history_start - 5 * _DAY_MS + index * 60_000,
                    roles=[bot_roles[bot.id].id],
                    status="online",
                )
            )
            guild.bots.add(bot.id)
        entries.sort(key=lambda m: m.joined_ms)
        guild.members = {m.user.id: m for m in entries}

        self._channels(guild, spec, created, by_name)
        self.world.add_guild(guild)
        authors = [m.user for m in entries if not m.user.bot]
        if authors:
            for channel in guild.channels:
                if channel.type == CHANNEL_TEXT and spec.messages:
                    self._history(guild, channel, authors, spec.messages, roles)
        return guild

    def _status(self) -> str:
        roll = self.rng.random()
        return (
            "online"
            if roll < 0.2
            else "idle"
            if roll < 0.28
            else "dnd"
            if roll < 0.33
            else "offline"
        )

    def _nick(self, user: User) -> str:
        rng = self.rng
        style = rng.randrange(3)
        if style == 0:
            return f"{rng.choice(_ADJ).capitalize()} {rng.choice(_NOUN).capitalize()}"
        if style == 1:
            return f"{(user.global_name or user.username)[:20]} [{rng.choice(('EU', 'NA', 'APAC', 'he/him', 'she/her'))}]"
        return rng.choice(_FIRST).capitalize()

    def _member_roles(self, by_name: dict[str, Role]) -> list[int]:
        rng = self.rng
        roles = [by_name["Member"].id] if rng.random() < 0.8 else []
        for name, *_ in _COSMETIC_ROLES:
            if rng.random() < 0.1:
                roles.append(by_name[name].id)
        return roles

    def _roles(
        self, guild: Guild, created: int, bots: list[Bot]
    ) -> tuple[list[Role], dict[int, Role]]:
        """The guild's roles bottom-up, and each bot's managed role by bot id."""
        ids = self.ids
        roles = [
            Role(
                id=guild.id, name="@everyone", position=0, permissions=DEFAULT_EVERYONE_PERMISSIONS
            )
        ]
        ladder: list[Role] = []
        for offset, (name, color, hoist, mentionable, perms) in enumerate(_COSMETIC_ROLES):
            ladder.append(
                Role(
                    id=ids.at(created + (offset + 1) * 1000),
                    name=name,
                    position=0,
                    color=color,
                    hoist=hoist,
                    mentionable=mentionable,
                    permissions=perms,
                )
            )
        ladder.append(Role(id=ids.at(created + 10_000), name="Member", position=0, color=0x95A5A6))
        ladder.append(
            Role(
                id=ids.at(created + 11_000),
                name="Server Booster",
                position=0,
                color=0xF47FFF,
                managed=True,
                tags={"premium_subscriber": None},
            )
        )
        bot_roles: dict[int, Role] = {}
        for index, bot in enumerate(bots):
            bot_roles[bot.id] = Role(
                id=ids.at(created + 20_000 + index),
                name=bot.user.username,
                position=0,
                managed=True,
                tags={"bot_id": str(bot.id)},
                permissions=self._bot_permissions(bot),
            )
            ladder.append(bot_roles[bot.id])
        ladder.append(
            Role(
                id=ids.at(created + 30_000),
                name="Moderator",
                position=0,
                color=0x3498DB,
                hoist=True,
                mentionable=True,
                permissions=_MODERATOR_PERMS,
            )
        )
        ladder.append(
            Role(
                id=ids.at(created + 31_000),
                name="Admin",
                position=0,
                color=0xE74C3C,
                hoist=True,
                permissions=PERM_ADMINISTRATOR,
            )
        )
        for position, role in enumerate(ladder, start=1):
            role.position = position
        roles.extend(ladder)
        guild.roles = roles
        return roles, bot_roles

    def _bot_permissions(self, bot: Bot) -> int:
        for bot_spec in self.spec.bots:
            if bot_spec.token == bot.token:
                return bot_spec.permissions
        raise KeyError(bot.token)

    def _channels(
        self, guild: Guild, spec: GuildSpec, created: int, by_name: dict[str, Role]
    ) -> None:
        ids = self.ids
        t = itertools.count(created + 100_000, 1000)
        channels: list[Channel] = []
        text_count = spec.channels
        category_count = (
            min(len(_CATEGORIES), max(1, math.ceil(text_count / 4))) if text_count else 0
        )
        categories = [
            Channel(
                id=ids.at(next(t)), guild_id=guild.id, type=CHANNEL_CATEGORY, name=name, position=i
            )
            for i, name in enumerate(_CATEGORIES[:category_count])
        ]
        channels.extend(categories)
        per_category = math.ceil(text_count / category_count) if category_count else 0
        names = [
            (_TEXT_CHANNELS[i] if i < len(_TEXT_CHANNELS) else f"channel-{i + 1}")
            for i in range(text_count)
        ]
        # Extra restricted channels (scenario only) go last: (name, what @everyone is denied).
        restricted = [(n, PERM_VIEW_CHANNEL) for n in spec.hidden_channels]
        restricted += [(n, PERM_SEND_MESSAGES) for n in spec.read_only_channels]
        names += [n for n, _ in restricted]
        for index, name in enumerate(names):
            parent = (
                categories[min(index // per_category, category_count - 1)] if categories else None
            )
            channel = Channel(
                id=ids.at(next(t)),
                guild_id=guild.id,
                type=CHANNEL_TEXT,
                name=name,
                position=index,
                parent_id=None if parent is None else parent.id,
                topic=f"Talk about {name.replace('-', ' ')}." if index % 3 else None,
            )
            if index >= text_count:
                denied = restricted[index - text_count][1]
                channel.overwrites = [
                    Overwrite(id=guild.id, type=0, deny=denied),
                    Overwrite(id=by_name["Moderator"].id, type=0, allow=denied),
                ]
            channels.append(channel)
        if spec.voice_channels:
            voice_category = Channel(
                id=ids.at(next(t)),
                guild_id=guild.id,
                type=CHANNEL_CATEGORY,
                name="Voice Channels",
                position=len(categories),
            )
            channels.append(voice_category)
            for index in range(spec.voice_channels):
                name = (
                    _VOICE_CHANNELS[index] if index < len(_VOICE_CHANNELS) else f"Voice {index + 1}"
                )
                channels.append(
                    Channel(
                        id=ids.at(next(t)),
                        guild_id=guild.id,
                        type=CHANNEL_VOICE,
                        name=name,
                        position=index,
                        parent_id=voice_category.id,
                        user_limit=0 if index % 2 == 0 else 10,
                    )
                )
        guild.channels = channels
        first_text = next((c for c in channels if c.type == CHANNEL_TEXT), None)
        guild.system_channel_id = None if first_text is None else first_text.id

    # ------------------------------------------------------------------ history
    def _content(self, mention: User | None) -> str:
        rng = self.rng
        parts = []
        if rng.random() < 0.4:
            parts.append(rng.choice(_OPENERS))
        parts.append(f"I {rng.choice(_VERBS)} {rng.choice(_TOPICS)}")
        if rng.random() < 0.3:
            parts.append(f"and {rng.choice(_VERBS)} {rng.choice(_TOPICS)}")
        text = " ".join(parts) + rng.choice(_ENDINGS)
        if mention is not None:
            text = f"<@{mention.id}> {text}"
        return text

    def _history(
        self, guild: Guild, channel: Channel, authors: list[User], count: int, roles: list[Role]
    ) -> None:
        rng, ids = self.rng, self.ids
        start = ANCHOR_MS - _HISTORY_DAYS * _DAY_MS
        times = sorted(rng.randint(start, ANCHOR_MS - 60_000) for _ in range(count))
        # A few regulars write most messages (Zipf-like weights over the member list).
        cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(authors))))
        chosen = rng.choices(authors, cum_weights=cum_weights, k=count)
        recent: list[Message] = []
        for when, author in zip(times, chosen, strict=True):
            roll = rng.random()
            mention = rng.choice(authors) if roll < 0.05 else None
            message = Message(
                id=ids.at(when),
                channel_id=channel.id,
                guild_id=guild.id,
                author=author,
                content=self._content(mention),
            )
            if mention is not None:
                message.mention_ids = [mention.id]
            if recent and rng.random() < 0.1:
                message.type = MESSAGE_REPLY
                message.reference_id = rng.choice(recent[-20:]).id
            if rng.random() < 0.05:
                message.edited_ms = message.created_ms + rng.randint(5_000, 3_600_000)
            roll = rng.random()
            if roll < 0.03:
                message.attachments = [self._attachment(channel, message, when)]
            elif roll < 0.06:
                self._link_embed(message)
            if rng.random() < 0.004:
                message.pinned = True
            channel.add_message(message)
            recent.append(message)

    def _attachment(self, channel: Channel, message: Message, when: int) -> dict[str, object]:
        rng = self.rng
        attachment_id = self.ids.at(when)
        if rng.random() < 0.7:
            filename = f"image_{rng.randint(1000, 9999)}.png"
            extra: dict[str, object] = {
                "content_type": "image/png",
                "width": rng.choice((640, 1280, 1920)),
                "height": rng.choice((480, 720, 1080)),
            }
        else:
            filename = rng.choice(("notes.txt", "build.log", "config.yaml", "report.pdf"))
            extra = {
                "content_type": {
                    "txt": "text/plain; charset=utf-8",
                    "log": "text/plain; charset=utf-8",
                    "yaml": "application/x-yaml",
                    "pdf": "application/pdf",
                }[filename.rsplit(".", 1)[1]]
            }
        # url and proxy_url are added as the message is served (they name the sandbox's CDN).
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": rng.randint(2_000, 4_000_000),
            **extra,
        }

    def _link_embed(self, message: Message) -> None:
        rng = self.rng
        slug = f"{rng.choice(_ADJ)}-{rng.choice(_NOUN)}-{rng.randint(1, 999)}"
        url = f"https://example.com/posts/{slug}"
        message.content = f"{message.content} {url}"
        message.embeds = [
            {
                "type": "article",
                "url": url,
                "title": slug.replace("-", " ").title(),
                "description": f"A post about {rng.choice(_TOPICS)}.",
                "provider": {"name": "Example"},
            }
        ]


def find_role(guild: Guild, name: str) -> Role | None:
    """The role named ``name`` (first match), or None."""
    return next((r for r in guild.roles if r.name == name), None)
