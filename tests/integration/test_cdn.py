"""With DISCORD_CDN_BASE pointing at the sandbox, every picture URL MemberSense hands out loads."""

from __future__ import annotations

from collections.abc import Callable

import requests

from membersense.sandbox.server import SandboxServer
from tests.integration.conftest import MemberSense
from tests.integration.support import MAIN_TOKEN


def _loads_as_image(url: str) -> None:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, url
    assert response.headers["Content-Type"] in ("image/png", "image/gif"), url


def test_avatars_icons_and_attachments_come_from_the_configured_cdn(
    sandbox: SandboxServer, membersense_factory: Callable[..., MemberSense]
) -> None:
    cdn = sandbox.cdn_url
    server = membersense_factory(DISCORD_CDN_BASE=cdn)
    assert server.api is not None
    login = server.api.post_login(MAIN_TOKEN).json()
    session = login["sessionId"]
    try:
        assert login["iconURL"].startswith(f"{cdn}/icons/")
        _loads_as_image(login["iconURL"])
        members = server.api.get("/api/members", session).json()
        assert all(m["avatar"].startswith(f"{cdn}/") for m in members)
        # Uploaded, per-guild, default and animated avatars alike: a sample of each kind.
        kinds: dict[str, str] = {}
        for member in members:
            path = member["avatar"][len(cdn) :]
            kind = path.split("/")[1] + (".gif" if ".gif" in path else "")
            kinds.setdefault(kind, member["avatar"])
        assert {"avatars", "embed"} <= set(kinds)
        for url in kinds.values():
            _loads_as_image(url)

        channels = server.api.get("/api/channels", session).json()
        attachments = []
        for channel in channels:
            if channel["name"] == "staff-only":
                continue
            for message in server.api.get("/api/messages", session, channelId=channel["id"]).json():
                assert message["author"]["avatar"].startswith(f"{cdn}/")
                attachments += message["attachments"]
        images = [a for a in attachments if (a["contentType"] or "").startswith("image/")]
        assert images, "the demo world's history has image attachments"
        assert all(a["url"].startswith(f"{cdn}/attachments/") for a in attachments)
        _loads_as_image(images[0]["url"])
    finally:
        server.api.logout(session)
    page = requests.get(f"{server.server.base_url}/", timeout=10)
    assert f"img-src 'self' data: {cdn};" in page.headers["Content-Security-Policy"]
