"""The sandbox's CDN: avatars, guild icons and attachments at Discord's CDN paths.

Discord serves pictures from ``https://cdn.discordapp.com``; the sandbox serves the same
paths from its own root, so a client that builds asset URLs from a configurable CDN base
(MemberSense's ``DISCORD_CDN_BASE``) shows real pictures against it:

- ``/avatars/{user_id}/{hash}.png|gif``, ``/guilds/{guild_id}/users/{user_id}/avatars/{hash}.png|gif``
- ``/embed/avatars/{index}.png`` (the six default avatars)
- ``/icons/{guild_id}/{hash}.png|gif``
- ``/attachments/{channel_id}/{attachment_id}/{filename}`` (the attachments' ``url`` and
  ``proxy_url`` point here)

A hash or attachment the world does not have is a 404, as on Discord. Pictures are
generated from the hash (:mod:`membersense.sandbox.images`), so a URL always shows the
same one; ``?size=`` takes Discord's powers of two from 16 to 4096, and, as on Discord,
a picture is never made larger than its original (256 px for avatars and icons).
Attachments that are not images are answered with a short text stand-in.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aiohttp import web

from membersense.sandbox import images
from membersense.sandbox.state import STATE
from membersense.sandbox.world import World

__all__ = ["ORIGINAL_SIZE", "add_cdn_routes"]

#: Side of the "original" avatars and icons; larger ``size`` requests get this.
ORIGINAL_SIZE = 256
_SIZES = frozenset(2**n for n in range(4, 13))
_IMAGE_TYPES = {"png": "image/png", "gif": "image/gif"}
#: Attachments larger than this are drawn at this size at most (per side).
_MAX_ATTACHMENT_SIDE = 4096
_HEADERS = {
    # A URL names one picture forever (it carries the hash or the attachment id).
    "Cache-Control": "public, max-age=31536000, immutable",
    "Access-Control-Allow-Origin": "*",
}


def _not_found() -> web.Response:
    return web.Response(status=404, text="404: Not Found")


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 20 else None


def _size(request: web.Request) -> int | web.Response:
    raw = request.query.get("size")
    if raw is None:
        return ORIGINAL_SIZE
    value = _int(raw)
    if value not in _SIZES:
        return web.Response(status=400, text="400: Bad Request")
    assert value is not None
    return min(value, ORIGINAL_SIZE)


@functools.lru_cache(maxsize=1024)
def _render(kind: str, seed: str, width: int, height: int, fmt: str) -> bytes:
    if kind == "identicon":
        picture = images.identicon(seed, width)
    elif kind == "default":
        picture = images.default_avatar(int(seed), width)
    else:
        picture = images.attachment_picture(seed, width, height)
    return images.encode_gif(picture) if fmt == "gif" else images.encode_png(picture)


async def _picture(kind: str, seed: str, width: int, height: int, fmt: str) -> web.Response:
    # Large pictures take tens of milliseconds to make: not on the loop the gateway shares.
    body = await asyncio.get_running_loop().run_in_executor(
        None, _render, kind, seed, width, height, fmt
    )
    return web.Response(body=body, content_type=_IMAGE_TYPES[fmt], headers=_HEADERS)


def _split_name(name: str) -> tuple[str, str] | None:
    stem, dot, ext = name.rpartition(".")
    if not dot or ext not in _IMAGE_TYPES or not stem:
        return None
    return stem, ext


def _world(request: web.Request) -> World:
    return request.app[STATE].world


async def _user_avatar(request: web.Request) -> web.StreamResponse:
    user_id, parts = _int(request.match_info["user_id"]), _split_name(request.match_info["name"])
    user = None if user_id is None else _world(request).user(user_id)
    if user is None or parts is None or user.avatar != parts[0]:
        return _not_found()
    size = _size(request)
    if isinstance(size, web.Response):
        return size
    return await _picture("identicon", parts[0], size, size, parts[1])


async def _member_avatar(request: web.Request) -> web.StreamResponse:
    guild_id, user_id = _int(request.match_info["guild_id"]), _int(request.match_info["user_id"])
    parts = _split_name(request.match_info["name"])
    guild = None if guild_id is None else _world(request).guild(guild_id)
    member = None if guild is None or user_id is None else guild.members.get(user_id)
    if member is None or parts is None or member.avatar != parts[0]:
        return _not_found()
    size = _size(request)
    if isinstance(size, web.Response):
        return size
    return await _picture("identicon", parts[0], size, size, parts[1])


async def _default_avatar(request: web.Request) -> web.StreamResponse:
    index = _int(request.match_info["index"])
    if index is None or index >= len(images.DEFAULT_AVATAR_COLOURS):
        return _not_found()
    size = _size(request)
    if isinstance(size, web.Response):
        return size
    return await _picture("default", str(index), size, size, "png")


async def _guild_icon(request: web.Request) -> web.StreamResponse:
    guild_id, parts = _int(request.match_info["guild_id"]), _split_name(request.match_info["name"])
    guild = None if guild_id is None else _world(request).guild(guild_id)
    if guild is None or parts is None or guild.icon != parts[0]:
        return _not_found()
    size = _size(request)
    if isinstance(size, web.Response):
        return size
    return await _picture("identicon", parts[0], size, size, parts[1])


def _find_attachment(world: World, channel_id: int, attachment_id: int) -> dict[str, Any] | None:
    channel = world.channel(channel_id)
    if channel is None:
        return None
    wanted = str(attachment_id)
    for message in channel.messages.values():
        for attachment in message.attachments:
            if attachment.get("id") == wanted:
                return attachment
    return None


async def _attachment(request: web.Request) -> web.StreamResponse:
    channel_id = _int(request.match_info["channel_id"])
    attachment_id = _int(request.match_info["attachment_id"])
    if channel_id is None or attachment_id is None:
        return _not_found()
    attachment = _find_attachment(_world(request), channel_id, attachment_id)
    if attachment is None or attachment.get("filename") != request.match_info["filename"]:
        return _not_found()
    content_type = str(attachment.get("content_type") or "")
    if content_type.startswith("image/"):
        width = min(int(attachment.get("width") or 640), _MAX_ATTACHMENT_SIDE)
        height = min(int(attachment.get("height") or 480), _MAX_ATTACHMENT_SIDE)
        return await _picture("attachment", str(attachment_id), width, height, "png")
    text = (
        f"{attachment['filename']}: a file of the MemberSense Discord sandbox.\n"
        "The sandbox keeps no uploaded bytes; its CDN answers every file with this stand-in.\n"
    )
    return web.Response(text=text, content_type="text/plain", charset="utf-8", headers=_HEADERS)


def add_cdn_routes(app: web.Application) -> None:
    """Serve Discord's CDN paths from *app*'s root."""
    router = app.router
    router.add_get("/avatars/{user_id}/{name}", _user_avatar)
    router.add_get("/guilds/{guild_id}/users/{user_id}/avatars/{name}", _member_avatar)
    router.add_get("/embed/avatars/{index}.png", _default_avatar)
    router.add_get("/icons/{guild_id}/{name}", _guild_icon)
    router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", _attachment)
