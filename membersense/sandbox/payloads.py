"""Discord's JSON for the sandbox world's objects: one serializer per Discord object.

:class:`Payloads` is the base of :class:`membersense.sandbox.world.World`; the payload
methods are part of World's interface (used by REST, the gateway and the control API).
Every call builds fresh dicts, so callers may change what they get.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from membersense.sandbox.models import (
    CHANNEL_TEXT,
    CHANNEL_VOICE,
    Bot,
    Channel,
    Guild,
    Member,
    Message,
    Role,
    User,
)
from membersense.sandbox.snowflake import iso_timestamp


def _iso_or_none(unix_ms: int | None) -> str | None:
    return None if unix_ms is None else iso_timestamp(unix_ms)


class Payloads:
    """Serializers of users, members, roles, channels, messages, guilds and applications."""

    if TYPE_CHECKING:  # provided by World
        users: dict[int, User]
        cdn_base: str

        def channel(self, channel_id: int) -> Channel | None: ...

        def guild(self, guild_id: int) -> Guild | None: ...

        def guilds_of(self, bot: Bot) -> list[Guild]: ...

        def base_permissions(self, guild: Guild, member: Member) -> int: ...

    def user_payload(self, user: User, *, private: bool = False) -> dict[str, Any]:
        """Discord's user object; ``private`` adds the fields of ``GET /users/@me``."""
        data: dict[str, Any] = {
            "id": str(user.id),
            "username": user.username,
            "global_name": user.global_name,
            "avatar": user.avatar,
            "discriminator": user.discriminator,
            "public_flags": user.public_flags,
            "flags": user.public_flags,
            "banner": user.banner,
            "accent_color": user.accent_color,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        if user.bot:
            data["bot"] = True
        if private:
            data.update(
                mfa_enabled=False, locale="en-US", verified=True, email=None, premium_type=0
            )
        return data

    def member_payload(
        self, guild: Guild, member: Member, *, with_user: bool = True
    ) -> dict[str, Any]:
        """Discord's guild member object (``with_user=False``: the partial member of MESSAGE_CREATE)."""
        data: dict[str, Any] = {
            "avatar": member.avatar,
            "banner": None,
            "communication_disabled_until": _iso_or_none(member.communication_disabled_until_ms),
            "flags": member.flags,
            "joined_at": iso_timestamp(member.joined_ms),
            "nick": member.nick,
            "pending": member.pending,
            "premium_since": _iso_or_none(member.premium_since_ms),
            "roles": [str(r) for r in member.roles],
            "mute": member.mute,
            "deaf": member.deaf,
        }
        if with_user:
            data["user"] = self.user_payload(member.user)
        return data

    def presence_payload(self, guild: Guild, member: Member) -> dict[str, Any]:
        """A presence update object for ``member`` (no activities are modelled)."""
        status = member.status
        return {
            "user": {"id": str(member.user.id)},
            "guild_id": str(guild.id),
            "status": status,
            "activities": [],
            "client_status": {} if status == "offline" else {"desktop": status},
        }

    def role_payload(self, role: Role) -> dict[str, Any]:
        """Discord's role object."""
        data: dict[str, Any] = {
            "id": str(role.id),
            "name": role.name,
            "color": role.color,
            "colors": {
                "primary_color": role.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": role.hoist,
            "icon": None,
            "unicode_emoji": None,
            "position": role.position,
            "permissions": str(role.permissions),
            "managed": role.managed,
            "mentionable": role.mentionable,
            "flags": 0,
        }
        if role.tags is not None:
            data["tags"] = dict(role.tags)
        return data

    def channel_payload(self, channel: Channel) -> dict[str, Any]:
        """Discord's guild channel object (with ``guild_id``)."""
        data: dict[str, Any] = {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(channel.guild_id),
            "name": channel.name,
            "position": channel.position,
            "flags": 0,
            "parent_id": None if channel.parent_id is None else str(channel.parent_id),
            "permission_overwrites": [
                {"id": str(ow.id), "type": ow.type, "allow": str(ow.allow), "deny": str(ow.deny)}
                for ow in channel.overwrites
            ],
            "nsfw": channel.nsfw,
        }
        if channel.type == CHANNEL_TEXT:
            last = channel.last_message_id
            data.update(
                topic=channel.topic,
                last_message_id=None if last is None else str(last),
                rate_limit_per_user=channel.rate_limit_per_user,
            )
        elif channel.type == CHANNEL_VOICE:
            last = channel.last_message_id
            data.update(
                bitrate=channel.bitrate,
                user_limit=channel.user_limit,
                rtc_region=None,
                last_message_id=None if last is None else str(last),
                rate_limit_per_user=channel.rate_limit_per_user,
            )
        return data

    def message_payload(self, message: Message, *, with_content: bool = True) -> dict[str, Any]:
        """Discord's message object as REST returns it.

        Without ``with_content`` the fields MESSAGE_CONTENT guards are empty, as Discord
        sends them to a bot lacking that intent.
        """
        data = self._basic_message_payload(message, with_content=with_content)
        if message.reference_id is not None:
            channel = self.channel(message.channel_id)
            referenced = None if channel is None else channel.messages.get(message.reference_id)
            data["message_reference"] = {
                "type": 0,
                "channel_id": str(message.channel_id),
                "message_id": str(message.reference_id),
                "guild_id": str(message.guild_id),
            }
            data["referenced_message"] = (
                None
                if referenced is None
                else self._basic_message_payload(referenced, with_content=with_content)
            )
        return data

    def _basic_message_payload(self, message: Message, *, with_content: bool) -> dict[str, Any]:
        users = self.users
        data: dict[str, Any] = {
            "type": message.type,
            "content": message.content if with_content else "",
            "mentions": [
                self.user_payload(users[uid]) for uid in message.mention_ids if uid in users
            ],
            "mention_roles": [str(r) for r in message.mention_role_ids],
            "attachments": [self.attachment_payload(message, a) for a in message.attachments]
            if with_content
            else [],
            "embeds": [dict(e) for e in message.embeds] if with_content else [],
            "timestamp": iso_timestamp(message.created_ms),
            "edited_timestamp": _iso_or_none(message.edited_ms),
            "flags": message.flags,
            "components": [],
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "author": self.user_payload(message.author),
            "pinned": message.pinned,
            "mention_everyone": message.mention_everyone,
            "tts": message.tts,
        }
        if message.nonce is not None:
            data["nonce"] = message.nonce
        return data

    def attachment_payload(self, message: Message, attachment: dict[str, Any]) -> dict[str, Any]:
        """Discord's attachment object: the stored fields plus ``url`` and ``proxy_url`` on the CDN."""
        url = f"{self.cdn_base}/attachments/{message.channel_id}/{attachment['id']}/{quote(attachment['filename'])}"
        return {**attachment, "url": url, "proxy_url": url}

    def message_dispatch_payload(self, message: Message) -> dict[str, Any]:
        """MESSAGE_CREATE / MESSAGE_UPDATE ``d``: the message plus ``guild_id`` and the author's partial member."""
        data = self.message_payload(message)
        data["guild_id"] = str(message.guild_id)
        guild = self.guild(message.guild_id)
        member = None if guild is None else guild.members.get(message.author.id)
        if guild is not None and member is not None:
            data["member"] = self.member_payload(guild, member, with_user=False)
        return data

    def guild_payload(self, guild: Guild, *, with_counts: bool = False) -> dict[str, Any]:
        """Discord's guild object as ``GET /guilds/{id}`` returns it."""
        data: dict[str, Any] = {
            "id": str(guild.id),
            "name": guild.name,
            "icon": guild.icon,
            "description": guild.description,
            "home_header": None,
            "splash": None,
            "discovery_splash": None,
            "features": [],
            "banner": None,
            "owner_id": str(guild.owner_id),
            "application_id": None,
            "region": "deprecated",
            "afk_channel_id": None if guild.afk_channel_id is None else str(guild.afk_channel_id),
            "afk_timeout": 300,
            "system_channel_id": None
            if guild.system_channel_id is None
            else str(guild.system_channel_id),
            "system_channel_flags": 0,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": guild.verification_level,
            "roles": [self.role_payload(r) for r in guild.roles],
            "default_message_notifications": 1,
            "mfa_level": 0,
            "explicit_content_filter": 2,
            "max_presences": None,
            "max_members": 500000,
            "max_stage_video_channel_users": 50,
            "max_video_channel_users": 25,
            "vanity_url_code": None,
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": sum(
                1 for m in guild.members.values() if m.premium_since_ms is not None
            ),
            "preferred_locale": guild.preferred_locale,
            "rules_channel_id": None
            if guild.rules_channel_id is None
            else str(guild.rules_channel_id),
            "safety_alerts_channel_id": None,
            "public_updates_channel_id": None,
            "premium_progress_bar_enabled": False,
            "nsfw": False,
            "nsfw_level": 0,
            "emojis": [],
            "stickers": [],
            "incidents_data": None,
        }
        if with_counts:
            data["approximate_member_count"] = guild.member_count
            data["approximate_presence_count"] = self.presence_count(guild)
        return data

    def presence_count(self, guild: Guild) -> int:
        """Members that are not offline."""
        return sum(1 for m in guild.members.values() if m.status != "offline")

    def guild_create_payload(
        self, guild: Guild, bot: Bot, *, large_threshold: int
    ) -> dict[str, Any]:
        """The GUILD_CREATE ``d`` for ``bot``: members inline only when the guild is not large."""
        data = self.guild_payload(guild)
        count = guild.member_count
        large = count > large_threshold
        own = guild.members.get(bot.id)
        if large:
            members = [] if own is None else [self.member_payload(guild, own)]
        else:
            members = [self.member_payload(guild, m) for m in guild.members.values()]
        data.update(
            joined_at=None if own is None else iso_timestamp(own.joined_ms),
            large=large,
            unavailable=False,
            member_count=count,
            members=members,
            channels=[self.channel_payload(c) for c in guild.channels],
            threads=[],
            presences=[],
            voice_states=[],
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
            lazy=True,
        )
        return data

    def my_guild_payload(
        self, guild: Guild, bot: Bot, *, with_counts: bool = False
    ) -> dict[str, Any]:
        """A partial guild of ``GET /users/@me/guilds``."""
        member = guild.members.get(bot.id)
        perms = 0 if member is None else self.base_permissions(guild, member)
        data: dict[str, Any] = {
            "id": str(guild.id),
            "name": guild.name,
            "icon": guild.icon,
            "banner": None,
            "owner": guild.owner_id == bot.id,
            "permissions": str(perms),
            "features": [],
        }
        if with_counts:
            data["approximate_member_count"] = guild.member_count
            data["approximate_presence_count"] = self.presence_count(guild)
        return data

    def application_payload(self, bot: Bot) -> dict[str, Any]:
        """``GET /oauth2/applications/@me`` for ``bot``'s application."""
        owner = self.users.get(bot.owner_id, bot.user)
        flags = bot.application_flags
        return {
            "id": str(bot.application_id),
            "name": bot.user.username,
            "icon": bot.user.avatar,
            "description": "A bot of the MemberSense Discord sandbox.",
            "summary": "",
            "type": None,
            "bot": self.user_payload(bot.user),
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": bot.verify_key,
            "flags": flags,
            "flags_new": str(flags),
            "hook": True,
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "owner": self.user_payload(owner),
            "approximate_guild_count": len(self.guilds_of(bot)),
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "team": None,
            "eligible_oauth2_scopes": ["bot", "applications.commands"],
            "integration_types_config": {"0": {}},
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
        }
