"""Helpers for tests against real servers: a sandbox world, API and control clients,
event streams, and a process's children, threads and sockets read from /proc.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from tests.contract import served_contract
from tests.sse import Frame, FrameReader

if TYPE_CHECKING:
    from membersense.sandbox.server import SandboxServer

T = TypeVar("T")

#: Bots of the test world (sandbox-only fake tokens).
MAIN_TOKEN = "main-bot-token"
SECOND_TOKEN = "second-bot-token"
NO_INTENTS_TOKEN = "no-intents-bot-token"
LONELY_TOKEN = "lonely-bot-token"
MULTI_TOKEN = "multi-bot-token"
#: Shaped like a real Discord token (base64 id, timestamp, HMAC), for tests of what logs see.
DISCORD_SHAPED_TOKEN = "MTE0NTE0MTkxOTgxMDg5MzQ0MA.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789"

MAIN_GUILD_MEMBERS = 1000


def log_records(log: str) -> list[dict[str, Any]]:
    """MemberSense's JSON log lines in a server's log, whatever the host writes before each
    (Apache prefixes its own timestamp and pid); lines that hold no JSON object are skipped."""
    records = []
    for line in log.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def logged(log: str, message: str, **fields: Any) -> bool:
    """Whether *log* holds a record with *message* and each of *fields* at that value."""
    return any(
        record.get("message") == message
        and all(record.get(key) == value for key, value in fields.items())
        for record in log_records(log)
    )


def scenario(main_members: int = MAIN_GUILD_MEMBERS) -> dict[str, Any]:
    """A world with a big guild, two small ones, and bots in every situation a login can meet."""
    return {
        "seed": 11,
        "bots": [
            {"token": MAIN_TOKEN, "username": "Main Bot"},
            {"token": SECOND_TOKEN, "username": "Second Bot"},
            {"token": NO_INTENTS_TOKEN, "username": "Shy Bot", "privileged_intents": []},
            {"token": LONELY_TOKEN, "username": "Lonely Bot"},
            {"token": MULTI_TOKEN, "username": "Multi Bot"},
            {"token": DISCORD_SHAPED_TOKEN, "username": "Shaped Bot"},
        ],
        "guilds": [
            {
                "name": "Alpha",
                "members": main_members,
                "channels": 4,
                "messages": 150,
                "bots": [MAIN_TOKEN, SECOND_TOKEN, NO_INTENTS_TOKEN, MULTI_TOKEN],
                "hidden_channels": ["staff-only"],
            },
            {"name": "Beta", "members": 20, "channels": 2, "messages": 5, "bots": [MULTI_TOKEN]},
            # A guild of its own, so the member counts of the others stay as they are.
            {
                "name": "Gamma",
                "members": 10,
                "channels": 1,
                "messages": 5,
                "bots": [DISCORD_SHAPED_TOKEN],
            },
        ],
    }


def write_scenario(path: Path, main_members: int = MAIN_GUILD_MEMBERS) -> str:
    path.write_text(json.dumps(scenario(main_members)))
    return str(path)


def wait_until(
    check: Callable[[], T],
    *,
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Poll *check* until it returns something truthy (returned) or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Api:
    """The MemberSense API over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()

    def close(self) -> None:
        self.http.close()

    def post_login(self, token: str) -> requests.Response:
        return self.http.post(f"{self.base_url}/api/auth/login", json={"token": token}, timeout=60)

    def login(self, token: str = MAIN_TOKEN) -> str:
        response = self.post_login(token)
        assert response.status_code == 200, response.text
        return response.json()["sessionId"]

    def logout(self, session_id: str) -> requests.Response:
        return self.http.post(
            f"{self.base_url}/api/auth/logout", headers={"Authorization": session_id}, timeout=30
        )

    def get(
        self, path: str, session_id: str, headers: dict[str, str] | None = None, **params: Any
    ) -> requests.Response:
        return self.http.get(
            f"{self.base_url}{path}",
            params=params,
            timeout=60,
            headers={"Authorization": session_id, **(headers or {})},
        )


class Control:
    """The sandbox's control API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = f"{base_url}/_sandbox"
        self.http = requests.Session()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, route: str, **body: Any) -> Any:
        """``METHOD /_sandbox{route}`` with *body* as JSON; the decoded answer."""
        response = self.http.request(method, self.base_url + route, json=body or None, timeout=30)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def state(self) -> dict[str, Any]:
        return self.request("GET", "/state")

    def gateway(self) -> dict[str, Any]:
        return self.state()["gateway"]

    def bot_id(self, username: str) -> str:
        return next(b["id"] for b in self.state()["bots"] if b["username"] == username)

    def guild_id(self, name: str) -> str:
        return next(g["id"] for g in self.state()["guilds"] if g["name"] == name)

    def connections_of(self, username: str) -> int:
        return self.gateway()["connections_by_bot"].get(self.bot_id(username), 0)


# -- sending, live events ----------------------------------------------------------

_names = itertools.count()


def newcomer() -> str:
    """A username no member of the sandbox has yet."""
    return f"newcomer{next(_names)}x{int(time.time() * 1000) % 100000}"


def general(api: Api, session: str) -> str:
    """A text channel of the session's guild that the bot can read."""
    return next(
        c["id"] for c in api.get("/api/channels", session).json() if c["name"] != "staff-only"
    )


def call(api: Api, method: str, path: str, session: str, **kwargs: Any) -> requests.Response:
    """``METHOD path`` on *api* with the session (``headers``, ``json``, ``params`` as requests')."""
    headers = {"Authorization": session, **kwargs.pop("headers", {})}
    return api.http.request(method, f"{api.base_url}{path}", headers=headers, timeout=60, **kwargs)


@contextmanager
def stream(
    api: Api, session: str, *, read_timeout: float = 30.0, **headers: str
) -> Iterator[FrameReader]:
    """An open event stream (its first comment already read: the stream is established).

    A read that waits longer than *read_timeout* seconds raises.
    """
    response = api.http.get(
        f"{api.base_url}/api/events",
        stream=True,
        timeout=(10, read_timeout),
        headers={"Authorization": session, **headers},
    )
    try:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        # Every frame is checked against the Event schema of the document the server serves.
        frames = FrameReader(
            response.iter_content(chunk_size=None), check=served_contract(api.base_url).check_frame
        )
        assert next(frames).comments == ["connected"]
        yield frames
    finally:
        response.close()


def until(frames: FrameReader, match: Callable[[Frame], bool]) -> Frame:
    """The first event frame *match* accepts (others of the guild may come first)."""
    while True:
        frame = frames.next_event()
        if match(frame):
            return frame


def sandbox_messages(sandbox: SandboxServer, channel: str) -> list[dict[str, Any]]:
    """The channel's messages as the sandbox holds them, newest last."""

    def read() -> list[dict[str, Any]]:
        found = sandbox.world.channel(int(channel))
        return [
            {
                "id": str(m.id),
                "content": m.content,
                "nonce": m.nonce,
                "mentions": list(m.mention_ids),
                "author": m.author.username,
            }
            for m in (found.messages[i] for i in found.message_ids)
        ]

    return sandbox.run(read)


# -- a process's resources, from /proc ------------------------------------------


def children(pid: int) -> list[int]:
    """The child processes of *pid* (a gunicorn master's workers)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def worker_pid(master_pid: int) -> int:
    """The (single) gunicorn worker of *master_pid*."""

    def child() -> int | None:
        path = Path(f"/proc/{master_pid}/task/{master_pid}/children")
        children = path.read_text().split() if path.exists() else []
        return int(children[0]) if children else None

    return wait_until(child, timeout=10, what="the gunicorn worker")


def thread_names(pid: int) -> list[str]:
    """Names of *pid*'s threads (as the kernel knows them: 15 characters at most)."""
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{task}/comm").read_text().strip())
        except FileNotFoundError:  # the thread ended while we looked
            continue
    return sorted(names)


def tcp_peer_ports(pid: int) -> list[int]:
    """Remote ports of *pid*'s connected TCP sockets (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if inode in inodes and state != "0A":  # 0A: LISTEN
                ports.append(int(remote.rsplit(":", 1)[1], 16))
    return sorted(ports)


def sockets_to(pid: int, port: int) -> int:
    """How many of *pid*'s TCP sockets are connected to *port*."""
    return tcp_peer_ports(pid).count(port)


# -- the API end to end, through any server ---------------------------------------------

#: Bots in the Alpha guild besides its human members.
MAIN_GUILD_BOTS = 4


def walk_the_api(api: Api, token: str = MAIN_TOKEN) -> str:
    """Health, login, members, channels, messages and logout through *api*'s server, each
    checked; returns the (logged out) session id."""
    health = api.http.get(f"{api.base_url}/_ah/health", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "healthy"})
    session = api.login(token)

    def members() -> requests.Response | None:
        # Right after another server of the module logged the same bot out, the sandbox's
        # member-request cooldown may still run: members follow shortly (503 meanwhile).
        response = api.get("/api/members", session)
        if response.status_code == 503 and "Retry-After" in response.headers:
            return None
        return response

    listed = wait_until(members, timeout=30, what="the member list", interval=0.2)
    assert listed.status_code == 200, listed.text
    assert len(listed.json()) == MAIN_GUILD_MEMBERS + MAIN_GUILD_BOTS
    channels = api.get("/api/channels", session)
    assert channels.status_code == 200, channels.text
    readable = [c for c in channels.json() if c["name"] != "staff-only"]
    assert readable, channels.json()
    messages = api.get("/api/messages", session, channelId=readable[0]["id"], limit=5)
    assert messages.status_code == 200, messages.text
    assert len(messages.json()) == 5
    logout = api.logout(session)
    assert (logout.status_code, logout.json()) == (200, {"message": "Logged out successfully"})
    assert api.get("/api/members", session).status_code == 401
    return session
