"""The sandbox's CDN serves real pictures at Discord's CDN paths, for what its world has."""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

from membersense.sandbox import images
from membersense.sandbox.cdn import ORIGINAL_SIZE
from membersense.sandbox.server import SandboxServer

from .conftest import TEST_TOKEN


def picture(response: requests.Response, fmt: str) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == f"image/{fmt}"
    image = Image.open(io.BytesIO(response.content))
    image.load()  # decodes every pixel: a broken stream raises here
    assert image.format == fmt.upper()
    return image


@pytest.fixture
def world_facts(sandbox: SandboxServer) -> dict:
    def collect() -> dict:
        guild = next(iter(sandbox.world.guilds.values()))
        users = [m.user for m in guild.members.values()]
        with_attachments = (
            [(c, m) for c in guild.channels for m in c.messages.values() if m.attachments]
            if guild.channels
            else []
        )
        return {
            "guild": guild.id,
            "icon": guild.icon,
            "static": next(u for u in users if u.avatar and not u.avatar.startswith("a_")),
            "no_avatar": next(u for u in users if not u.avatar),
            "attachments": with_attachments,
        }

    return sandbox.run(collect)


def test_user_avatars_and_guild_icons_are_pngs_of_their_hash(
    sandbox: SandboxServer, world_facts: dict
) -> None:
    user = world_facts["static"]
    url = f"{sandbox.cdn_url}/avatars/{user.id}/{user.avatar}.png"
    full = picture(requests.get(url, timeout=10), "png")
    assert full.size == (ORIGINAL_SIZE, ORIGINAL_SIZE)  # never larger than the original
    assert picture(requests.get(url, params={"size": 1024}, timeout=10), "png").size == full.size
    assert picture(requests.get(url, params={"size": 64}, timeout=10), "png").size == (64, 64)
    again = requests.get(url, timeout=10)
    assert again.content == requests.get(url, timeout=10).content  # the same picture every time
    assert "immutable" in again.headers["Cache-Control"]
    assert (
        len(set(full.convert("RGB").getcolors() or [])) == 2
    )  # an identicon: background and colour

    icon = requests.get(
        f"{sandbox.cdn_url}/icons/{world_facts['guild']}/{world_facts['icon']}.png",
        params={"size": 128},
        timeout=10,
    )
    assert picture(icon, "png").size == (128, 128)
    assert icon.content != requests.get(url, params={"size": 128}, timeout=10).content


def test_animated_hashes_are_served_as_gif_too(sandbox: SandboxServer) -> None:
    user = sandbox.run(lambda: sandbox.world.create_user("animated_one", avatar="a_" + "0f" * 16))
    image = picture(
        requests.get(f"{sandbox.cdn_url}/avatars/{user.id}/{user.avatar}.gif?size=32", timeout=10),
        "gif",
    )
    expected = images.identicon(user.avatar, 32)
    assert image.convert("RGB").tobytes() == b"".join(
        bytes(expected.palette[v]) for row in expected.rows for v in row
    )


def test_default_avatars_and_per_guild_avatars(sandbox: SandboxServer, world_facts: dict) -> None:
    for index in range(6):
        picture(requests.get(f"{sandbox.cdn_url}/embed/avatars/{index}.png", timeout=10), "png")
    assert requests.get(f"{sandbox.cdn_url}/embed/avatars/6.png", timeout=10).status_code == 404

    guild_id, user = world_facts["guild"], world_facts["no_avatar"]

    def give_guild_avatar() -> None:
        guild = sandbox.world.guild(guild_id)
        sandbox.world.update_member(guild, guild.members[user.id], avatar="ab" * 16)

    sandbox.run(give_guild_avatar)
    url = f"{sandbox.cdn_url}/guilds/{guild_id}/users/{user.id}/avatars/{'ab' * 16}.png"
    picture(requests.get(url, timeout=10), "png")


@pytest.mark.parametrize(
    "path",
    [
        "/avatars/{user}/{wrong}.png",  # a hash the user does not have
        "/avatars/123/{hash}.png",  # an unknown user
        "/avatars/{user}/{hash}.webp",  # a format the sandbox does not make
        "/icons/{guild}/{wrong}.png",
        "/guilds/{guild}/users/{user}/avatars/{hash}.png",  # no per-guild avatar
        "/attachments/{guild}/1/x.png",
    ],
)
def test_what_the_world_does_not_have_is_a_404(
    sandbox: SandboxServer, world_facts: dict, path: str
) -> None:
    user = world_facts["static"]
    url = sandbox.cdn_url + path.format(
        user=user.id, hash=user.avatar, wrong="0" * 32, guild=world_facts["guild"]
    )
    response = requests.get(url, timeout=10)
    assert response.status_code == 404 and response.text == "404: Not Found"


def test_a_size_that_is_not_a_power_of_two_is_a_400(
    sandbox: SandboxServer, world_facts: dict
) -> None:
    user = world_facts["static"]
    for size in ("100", "8", "8192", "x"):
        response = requests.get(
            f"{sandbox.cdn_url}/avatars/{user.id}/{user.avatar}.png",
            params={"size": size},
            timeout=10,
        )
        assert response.status_code == 400, size


def test_attachments_point_at_the_sandbox_and_load(
    sandbox: SandboxServer, world_facts: dict
) -> None:
    assert world_facts["attachments"], "the generated history has attachments"
    channel, message = world_facts["attachments"][0]
    served = requests.get(
        f"{sandbox.api_url}/channels/{channel.id}/messages/{message.id}",
        headers={"Authorization": f"Bot {TEST_TOKEN}"},
        timeout=10,
    ).json()
    (attachment,) = served["attachments"]
    assert attachment["url"].startswith(
        f"{sandbox.cdn_url}/attachments/{channel.id}/{attachment['id']}/"
    )
    assert attachment["proxy_url"] == attachment["url"]
    response = requests.get(attachment["url"], timeout=10)
    if attachment["content_type"] == "image/png":
        assert picture(response, "png").size == (attachment["width"], attachment["height"])
    else:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith(
            "text/plain"
        )
        assert attachment["filename"] in response.text


def test_an_uploaded_image_is_served_at_the_url_its_message_names(
    sandbox: SandboxServer, world_facts: dict
) -> None:
    channel = world_facts["attachments"][0][0]
    files = {"files[0]": ("my picture.png", b"\x89PNG not really", "image/png")}
    created = requests.post(
        f"{sandbox.api_url}/channels/{channel.id}/messages",
        files=files,
        data={"payload_json": '{"content": "look"}'},
        headers={"Authorization": f"Bot {TEST_TOKEN}"},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    (attachment,) = created.json()["attachments"]
    assert attachment["url"].endswith("/my%20picture.png")
    picture(requests.get(attachment["url"], timeout=10), "png")
