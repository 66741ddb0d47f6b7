"""``membersense demo``: the sandbox and the API wired together, as the README's first command."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from queue import Empty, Queue

import pytest
import requests

from tests.servers import ROOT, free_port

SMALL_WORLD = ["--members", "40", "--channels", "3", "--messages", "5"]


def _lines(stream, queue: Queue) -> None:
    for line in stream:
        queue.put(line)


def _start(*args: str) -> tuple[subprocess.Popen[str], Queue[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "membersense", "demo", *args, *SMALL_WORLD],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output: Queue[str] = Queue()
    threading.Thread(target=_lines, args=(process.stdout, output), daemon=True).start()
    return process, output


def _banner(process: subprocess.Popen[str], output: Queue[str]) -> str:
    banner = ""
    deadline = time.monotonic() + 60
    while "/api/messages?channelId=" not in banner:
        assert time.monotonic() < deadline and process.poll() is None, banner
        try:
            banner += output.get(timeout=1)
        except Empty:
            continue
    return banner


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """Another server's socket, listening on a port of 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_demo_serves_the_api_against_the_sandbox_and_stops_cleanly() -> None:
    port, sandbox_port = free_port(), free_port()
    process, output = _start("--port", str(port), "--sandbox-port", str(sandbox_port))
    try:
        banner = _banner(process, output)
        api = re.search(r"API\s+(http://\S+)", banner).group(1)  # type: ignore[union-attr]
        token = re.search(r"Bot token\s+(\S+)", banner).group(1)  # type: ignore[union-attr]
        channel = re.search(r"Channel\s+#(\S+) (\d+)", banner)
        assert api == f"http://127.0.0.1:{port}"
        assert re.search(r"Dashboard\s+" + re.escape(api) + "/", banner)
        assert re.search(rf"Sandbox\s+http://127\.0\.0\.1:{sandbox_port}\s", banner)
        assert channel is not None and channel.group(1) == "general"

        # The banner's commands, pasted into a shell as they are.
        commands = [
            line.strip()
            for line in banner.splitlines()
            if line.strip().startswith(("SESSION=", "curl "))
        ]
        assert len(commands) == 3
        pasted = subprocess.run(
            ["bash", "-c", "\n".join([commands[0], "echo", commands[1], "echo", commands[2]])],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        members_out, messages_out = pasted.stdout.strip().splitlines()
        assert len(json.loads(members_out)) == 5
        messages = json.loads(messages_out)
        assert len(messages) == 5 and all(m["content"] for m in messages)

        login = requests.post(f"{api}/api/auth/login", json={"token": token}, timeout=30)
        assert login.status_code == 200, login.text
        assert login.json()["memberCount"] == 41  # 40 members and the bot
        assert login.json()["iconURL"].startswith(f"http://127.0.0.1:{sandbox_port}/icons/")
        members = requests.get(
            f"{api}/api/members", headers={"Authorization": login.json()["sessionId"]}, timeout=10
        )
        assert len(members.json()) == 41
        avatar = requests.get(members.json()[0]["avatar"], timeout=10)  # from the sandbox's CDN
        assert avatar.status_code == 200 and avatar.headers["Content-Type"].startswith("image/")
        assert requests.get(f"{api}/", timeout=10).status_code == 200  # the dashboard
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        time.sleep(0.2)  # the reader thread sees the end of the stream
        assert process.stdout is not None
        process.stdout.close()
    assert code == 0
    # Both children are gone with it: nothing answers on either port any more.
    for gone in (port, sandbox_port):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{gone}/_ah/health", timeout=2)


@pytest.mark.parametrize("taken", ["--port", "--sandbox-port"])
def test_a_taken_port_stops_the_demo_with_one_line_before_anything_starts(
    listening: socket.socket, taken: str
) -> None:
    ports = {"--port": str(free_port()), "--sandbox-port": str(free_port())}
    ports[taken] = str(listening.getsockname()[1])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "membersense",
            "demo",
            *(a for kv in ports.items() for a in kv),
            *SMALL_WORLD,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""  # no banner, no server's output: nothing was started
    (line,) = result.stderr.splitlines()
    variable = "PORT" if taken == "--port" else "SANDBOX_PORT"
    assert line.startswith("membersense demo: ") and f" {ports[taken]} " in line
    assert f"{variable}=" in line and "Traceback" not in result.stderr


def test_ports_come_from_the_environment_as_make_demo_passes_them(listening: socket.socket) -> None:
    taken = str(listening.getsockname()[1])
    env = {"PATH": "/usr/bin:/bin", "PORT": str(free_port()), "SANDBOX_PORT": taken}
    result = subprocess.run(
        [sys.executable, "-m", "membersense", "demo", *SMALL_WORLD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1 and f"sandbox port {taken} " in result.stderr


def test_the_readmes_example_ids_exist_in_the_demo_world() -> None:
    from membersense.demo import WORLD
    from membersense.sandbox.config import SandboxConfig
    from membersense.sandbox.generator import build_world

    readme = (ROOT / "README.md").read_text()
    world = build_world(SandboxConfig(**WORLD))
    (guild,) = world.guilds.values()
    channel_ids = set(re.findall(r"channelId=(\d+)", readme))
    assert channel_ids and all(world.channel(int(c)) is not None for c in channel_ids)
    for after in re.findall(r"[?&]after=(\d+)\b", readme):  # member ids, not event ids
        # A member id or the one just before one: the page it shows starts at a real member.
        assert int(after) in guild.members or int(after) + 1 in guild.members, after
    # Every id-looking value of the README's JSON examples names something of the demo world.
    ids = {int(i) for i in re.findall(r'"(?:id|guildId|parentId|replyTo)": "(\d+)"', readme)}
    ids |= {int(i) for i in re.findall(r"/(?:avatars|icons)/(\d+)/", readme)}
    known = {
        guild.id,
        *guild.members,
        *(c.id for c in guild.channels),
        *(m for c in guild.channels for m in c.messages),
    }
    assert ids and ids <= known, ids - known
    # And the sample objects are those objects.
    general = world.channel(int(next(iter(channel_ids))))
    assert general is not None and general.name == "general"
    assert f'"name": "general", "type": "text", "parentId": "{general.parent_id}"' in readme
    newest = max(general.messages)
    assert f'[{{"id": "{newest}"' in readme  # the first message of the example's page
    assert f'"serverName": "{guild.name}", "memberCount": {guild.member_count}' in readme
