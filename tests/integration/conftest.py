"""Shared fixtures for integration tests: the sandbox (a real Discord emulator on a
thread of the test process) and MemberSense under gunicorn (a real subprocess),
talking over real sockets with real discord.py in between; for Redis mode, a
:class:`Cluster` of MemberSense instances sharing one Redis.

Servers are started once per module; each test logs out what it logged in and
clears the sandbox's faults, so tests of a module stay independent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from membersense.cluster.connection import Keys
from membersense.sandbox.config import SandboxConfig
from membersense.sandbox.server import SandboxServer
from tests.contract import watch_session
from tests.integration.support import (
    Api,
    Control,
    children,
    sockets_to,
    worker_pid,
    write_scenario,
)
from tests.redis_support import delete_prefix, lease_holder_pid, new_prefix
from tests.servers import GunicornServer

#: DISCORD_TIMEOUT and LOGIN_TIMEOUT of these tests' servers, in seconds: timing
#: assertions are written relative to them.
DISCORD_TIMEOUT_S = 3.0
LOGIN_TIMEOUT_S = 15.0
#: The sandbox's cooldown between two full member requests of a guild (Discord: 30 s).
MEMBER_REQUEST_COOLDOWN_S = 2.0

#: Settings every MemberSense server of these tests runs with (on top of the sandbox's URLs).
BASE_ENV = {
    "RATE_LIMIT_MAX_REQUESTS": "1000000",
    "DISCORD_TIMEOUT": str(int(DISCORD_TIMEOUT_S * 1000)),
    "LOGIN_TIMEOUT": str(int(LOGIN_TIMEOUT_S * 1000)),
    "LOG_LEVEL": "INFO",
    "THREADS": "8",
    # Connections close as their last session ends (tests of the linger set their own),
    # and every test logs in from 127.0.0.1 with a handful of bots.
    "CONNECTION_LINGER": "0",
    "MAX_SESSIONS_PER_TOKEN": "1000",
    "MAX_SESSIONS_PER_IP": "1000",
}


def start_sandbox(tmp: Path, main_members: int = 1000, **config: Any) -> SandboxServer:
    """A sandbox serving :func:`tests.integration.support.scenario` (fast member-request cooldown)."""
    options: dict[str, Any] = {"member_request_cooldown_s": MEMBER_REQUEST_COOLDOWN_S, **config}
    return SandboxServer(
        SandboxConfig(port=0, scenario=write_scenario(tmp / "world.json", main_members), **options)
    ).start()


class MemberSense:
    """gunicorn serving MemberSense against a sandbox, with clients for both."""

    def __init__(self, sandbox: SandboxServer, log_path: Path, **env: str) -> None:
        self.sandbox = sandbox
        self.server = GunicornServer(
            {
                **BASE_ENV,
                "DISCORD_API_BASE": sandbox.api_url,
                "DISCORD_GATEWAY_URL": sandbox.gateway_url,
                **env,
            },
            log_path=log_path,
        )
        self.api: Api | None = None
        self.control = Control(sandbox.base_url)

    def start(self) -> MemberSense:
        self.server.start()
        self.api = Api(self.server.base_url)
        # Every answer the tests see must be one the served OpenAPI document allows.
        watch_session(self.api.http, self.server.base_url)
        return self

    @property
    def worker(self) -> int:
        assert self.server.process is not None
        return worker_pid(self.server.process.pid)

    def stop(self) -> int | None:
        if self.api is not None:
            self.api.close()
        self.control.close()
        return self.server.stop()


def api_of(instance: MemberSense) -> Api:
    """The API client of a started instance."""
    assert instance.api is not None
    return instance.api


#: Redis mode's SESSION_SECRET in these tests.
SECRET = "the cluster's session secret, 32+ characters"
#: Short leases, so that a failover happens within the test's patience (BOT_LEASE_TIME).
LEASE_S = 3.0


class Cluster:
    """MemberSense instances sharing one Redis (and one key prefix)."""

    def __init__(self, sandbox: SandboxServer, tmp: Path, url: str) -> None:
        self.sandbox, self.tmp, self.url = sandbox, tmp, url
        self.prefix = new_prefix()
        self.keys = Keys(self.prefix)
        self.instances: list[MemberSense] = []

    def start(self, workers: int = 2, **env: str) -> MemberSense:
        settings = {
            "REDIS_URL": self.url,
            "SESSION_SECRET": SECRET,
            "REDIS_KEY_PREFIX": self.prefix,
            "WEB_CONCURRENCY": str(workers),
            "BOT_LEASE_TIME": str(int(LEASE_S * 1000)),
            **env,
        }
        instance = MemberSense(
            self.sandbox, self.tmp / f"instance-{len(self.instances)}.log", **settings
        )
        self.instances.append(instance)
        return instance.start()

    def owner_of(self, candidates: list[MemberSense]) -> MemberSense | None:
        """The instance whose workers hold a socket to the sandbox (the bot's gateway)."""
        for instance in candidates:
            assert instance.server.process is not None
            for worker in children(instance.server.process.pid):
                if sockets_to(worker, self.sandbox.port):
                    return instance
        return None

    def owner_pid(self, token: str) -> int | None:
        """The process holding the bot's lease, or None."""
        client = redis.Redis.from_url(self.url)
        try:
            return lease_holder_pid(client, self.keys, token)
        finally:
            client.close()

    def instance_of(self, pid: int | None) -> MemberSense | None:
        """The instance *pid* is a worker of."""
        for instance in self.instances:
            process = instance.server.process
            if pid is not None and process is not None and pid in children(process.pid):
                return instance
        return None

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()
        delete_prefix(self.url, self.prefix)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def sandbox(module_tmp: Path) -> Iterator[SandboxServer]:
    server = start_sandbox(module_tmp)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def membersense_factory(
    sandbox: SandboxServer, module_tmp: Path
) -> Iterator[Callable[..., MemberSense]]:
    """``make(**env)`` starts MemberSense under gunicorn; all are stopped at the module's end."""
    made: list[MemberSense] = []

    def make(**env: str) -> MemberSense:
        server = MemberSense(sandbox, module_tmp / f"gunicorn-{len(made)}.log", **env)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.stop()


@pytest.fixture(scope="module")
def app_server(membersense_factory: Callable[..., MemberSense]) -> MemberSense:
    """The module's MemberSense server with the base settings."""
    return membersense_factory()


@pytest.fixture
def api(app_server: MemberSense) -> Iterator[Api]:
    """The API client; sessions a test opened with ``login`` are logged out afterwards."""
    client = app_server.api
    assert client is not None
    opened: list[str] = []
    real_login = client.login

    def login(token: str = "main-bot-token") -> str:
        session_id = real_login(token)
        opened.append(session_id)
        return session_id

    client.login = login  # type: ignore[method-assign]
    yield client
    client.login = real_login  # type: ignore[method-assign]
    for session_id in opened:
        client.logout(session_id)


@pytest.fixture
def control(app_server: MemberSense) -> Iterator[Control]:
    """The sandbox control API; faults are cleared after each test."""
    yield app_server.control
    app_server.control.request("DELETE", "/faults")
