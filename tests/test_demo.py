"""``membersense demo``: the sandbox and the API wired together, as the README's first command."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from queue import Empty, Queue

import requests

from tests.servers import ROOT, free_port


def _lines(stream, queue: Queue) -> None:
    for line in stream:
        queue.put(line)


def test_demo_serves_the_api_against_the_sandbox_and_stops_cleanly() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "membersense", "demo", "--port", str(port), "--sandbox-port", "0",
         "--members", "40", "--channels", "2", "--messages", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    output: Queue[str] = Queue()
    reader = threading.Thread(target=_lines, args=(process.stdout, output), daemon=True)
    reader.start()
    try:
        banner = ""
        deadline = time.monotonic() + 60
        while "Authorization: <sessionId>" not in banner:
            assert time.monotonic() < deadline and process.poll() is None, banner
            try:
                banner += output.get(timeout=1)
            except Empty:
                continue
        api = re.search(r"API\s+(http://\S+)", banner).group(1)  # type: ignore[union-attr]
        token = re.search(r"Bot token\s+(\S+)", banner).group(1)  # type: ignore[union-attr]
        assert api == f"http://127.0.0.1:{port}"
        assert f"curl -s -X POST {api}/api/auth/login" in banner
        assert re.search(r"Dashboard\s+" + re.escape(api) + "/", banner)

        login = requests.post(f"{api}/api/auth/login", json={"token": token}, timeout=30)
        assert login.status_code == 200, login.text
        assert login.json()["memberCount"] == 41  # 40 members and the bot
        members = requests.get(f"{api}/api/members",
                               headers={"Authorization": login.json()["sessionId"]}, timeout=10)
        assert len(members.json()) == 41
        assert requests.get(f"{api}/", timeout=10).status_code == 200  # the dashboard
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
        reader.join(5)
        assert process.stdout is not None
        process.stdout.close()
    assert code == 0
    # Both children are gone with it: nothing answers on the API port any more.
    try:
        requests.get(f"http://127.0.0.1:{port}/_ah/health", timeout=2)
        raise AssertionError("the API server outlived the demo")
    except requests.ConnectionError:
        pass
