"""Redis for tests: the machine's shared one, or redis-server processes of the tests' own.

The shared Redis on 127.0.0.1:6379 keeps nothing on disk and is never stopped or flushed
by a test: every test gets a key prefix of its own and deletes its keys afterwards.
Tests that stop Redis start a :class:`RedisServer` of their own on a free port.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import redis

from membersense.cluster.connection import Keys
from membersense.discord.tokens import fingerprint
from tests.servers import free_port

SHARED_URL = "redis://127.0.0.1:6379/0"


def shared_redis_alive() -> bool:
    try:
        redis.Redis.from_url(SHARED_URL, socket_timeout=1).ping()
    except redis.RedisError:
        return False
    return True


def lease_holder_pid(client: redis.Redis, keys: Keys, token: str) -> int | None:
    """The pid of the process holding the bot's lease, or None.

    A lease is ``"<host>:<pid>:<nonce>:<fence>"`` (:class:`membersense.cluster.leases.Leases`).
    """
    lease = client.get(keys.lease(fingerprint(token)))
    return int(lease.decode().split(":")[-3]) if isinstance(lease, bytes) else None


def new_prefix() -> str:
    """A key prefix no other test uses."""
    return f"mstest-{uuid.uuid4().hex[:12]}:"


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under *prefix*; how many."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


class RedisServer:
    """A redis-server of a test's own on a free port (optionally persisting to *data_dir*)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.data_dir is not None:
            args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data_dir)]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
