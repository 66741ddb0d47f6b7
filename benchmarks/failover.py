"""Benchmark: Redis mode's failover times (issue 9): a killed or stopped owner, logouts, members.

    .venv/bin/python -m benchmarks.failover [--rounds R] [--repeats N] [--members M] [--logs DIR]

Two MemberSense instances (two gunicorn masters, 2 workers each) share the Redis on
127.0.0.1:6379 (under a key prefix of their own) and one sandbox (its own process, with
Discord's 30 s member-request cooldown), at the default ``BOT_LEASE_TIME``. One bot, one guild
of *M* members (default 1000), one session that lives through every round.

- **Owner killed**: ``kill -9`` of the master and workers of the instance holding the bot's
  lease, right after the owner renewed it (the slowest case: the lease's whole time must run
  out before another process may take over). From the kill, threads polling every 50 ms
  time (a) the sandbox showing one gateway connection for the bot again, from the survivor
  ("one connection again"); (b) a member added through the sandbox right after the kill
  listed by ``GET /api/members`` on every worker of the survivor ("fresh members"); (c) on
  an event stream opened with a ticket on the survivor, the first of the messages posted
  through the sandbox (one every 50 ms from the kill on) to arrive after those lost while no
  process held the bot's connection ("events flowing again"; how many were lost is
  printed). *R* rounds (default 3); the dead instance is started again between rounds.
- **Owner stopped** with SIGTERM (a deploy): the same three times; the owner releases its
  lease as it stops instead of leaving it to expire.
- **Logout propagation**: log in on A, log out on B; the time from B's answer until every
  worker of A answers 401 (README: within milliseconds). *N* repeats (default 10).
- **Member visibility**: a member added through the sandbox; the time until every worker of
  both instances lists it. *N* repeats.

Each worker is asked over a keep-alive connection that worker accepted (found in /proc: the
worker holding the other end of the socket), so "every worker" means each one, not many
requests that probably reached each.

The last full member list's age at the kill is printed: the new owner waits out what is
left of Discord's cooldown since then (rounds follow each other closely, so nearly all of it).

Targets (issue 9), the maximum over the rounds: after the owner dies, events flow again
within 15 s (``BOT_LEASE_TIME``, 12 s, then the connection) and members are fresh within
45 s (the lease plus Discord's 30 s member cooldown); the same for a stopped owner. A new
member on every worker within 1 s.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Self
from urllib.parse import urlsplit

import redis
import requests

from benchmarks.common import GunicornServer, Sandbox, median
from membersense.cluster.connection import Keys
from membersense.config import load_settings
from membersense.discord.tokens import fingerprint
from tests.integration.support import Control, children, tcp_peer_ports
from tests.redis_support import SHARED_URL, delete_prefix, lease_holder_pid, new_prefix
from tests.sse import FrameReader

TOKEN = "bench-failover-token"
SECRET = "the failover benchmark's session secret, 32+ characters"
WORKERS = 2
#: How often the watchers look, and how often messages are posted while events are awaited.
POLL_S = 0.05
#: Member visibility is a target of 1 s: a finer poll than the failover watchers'.
VISIBILITY_POLL_S = 0.02
EVENTS_TARGET_S = 15.0
MEMBERS_TARGET_S = 45.0
VISIBILITY_TARGET_S = 1.0
#: A watcher gives up after this long (the round then fails its target).
WATCH_LIMIT_S = 120.0
#: The default BOT_LEASE_TIME, in seconds: the targets are in terms of it.
LEASE_S = load_settings(environ={}, dotenv=False).bot_lease_time_s

#: Errors a probe meets while a server is between owners, stopping or dropping a connection.
TRANSIENT = (
    OSError,
    http.client.HTTPException,
    requests.RequestException,
    redis.RedisError,
    StopIteration,
    ValueError,
    KeyError,
)


# -- one keep-alive connection per worker -------------------------------------------------


class WorkerClients:
    """A keep-alive HTTP connection to each worker of one gunicorn instance.

    gunicorn's workers share the listening socket, so which one answers a new connection is
    up to them; a connection is kept for a worker once /proc shows that worker holds its
    other end, and every request on it is then answered by that worker.
    """

    def __init__(self, server: GunicornServer) -> None:
        assert server.process is not None
        self.master = server.process.pid
        parts = urlsplit(server.base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.connections: dict[int, http.client.HTTPConnection] = {}

    @property
    def workers(self) -> list[int]:
        return sorted(self.connections)

    def connect(self) -> Self:
        """Connect to every worker of the instance."""
        for worker in children(self.master):
            self.connections[worker] = self._connect_to(worker)
        return self

    def _connect_to(self, worker: int, attempts: int = 300) -> http.client.HTTPConnection:
        for _ in range(attempts):
            connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                # A request answered: the connection has been accepted by some worker.
                connection.request("GET", "/_ah/health")
                connection.getresponse().read()
                assert connection.sock is not None
                if connection.sock.getsockname()[1] in tcp_peer_ports(worker):
                    return connection
            except TRANSIENT:
                pass
            connection.close()
        raise RuntimeError(f"no connection accepted by worker {worker} in {attempts} tries")

    def get(self, worker: int, path: str, session: str) -> tuple[int, bytes]:
        """``GET path`` answered by *worker*: (status, body). A dropped connection (the
        keep-alive timeout) is replaced by another one to the same worker."""
        for retry in (False, True):
            connection = self.connections[worker]
            try:
                connection.request("GET", path, headers={"Authorization": session})
                response = connection.getresponse()
                return response.status, response.read()
            except TRANSIENT:
                connection.close()
                if retry:
                    raise
                self.connections[worker] = self._connect_to(worker)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


def member_path(member_id: str) -> str:
    """``GET /api/members`` for just *member_id* (members are listed by id): a small answer."""
    return f"/api/members?limit=1&after={int(member_id) - 1}"


def lists(clients: WorkerClients, worker: int, session: str, member_id: str) -> bool:
    """Whether *worker* lists the member *member_id*."""
    status, body = clients.get(worker, member_path(member_id), session)
    return status == 200 and member_id.encode() in body


# -- the cluster --------------------------------------------------------------------------


class Cluster:
    """MemberSense instances started with the same settings; a dead one can be replaced."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.servers: list[GunicornServer] = []
        self.started = 0

    def start(self) -> GunicornServer:
        server = GunicornServer(self.env, log_path=self.log_dir / f"instance-{self.started}.log")
        self.started += 1
        self.servers.append(server)
        return server.start(timeout=60)

    def replace(self, server: GunicornServer) -> GunicornServer:
        """Stop (or reap) *server* and start another in its place."""
        server.stop()
        self.servers.remove(server)
        return self.start()

    def holding(self, pid: int | None) -> GunicornServer | None:
        """The instance *pid* is a worker of."""
        for server in self.servers:
            if (
                pid is not None
                and server.process is not None
                and pid in children(server.process.pid)
            ):
                return server
        return None

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class Bot:
    """The benchmark's bot as the sandbox and Redis see it: its connections and its lease."""

    def __init__(self, sandbox: Sandbox, prefix: str) -> None:
        self.control = Control(sandbox.base_url)
        state = self.control.state()
        self.id = state["bots"][0]["id"]
        self.guild = state["guilds"][0]["id"]
        self.redis = redis.Redis.from_url(SHARED_URL, socket_timeout=5)
        self.keys = Keys(prefix)
        self.lease_key = self.keys.lease(fingerprint(TOKEN))

    def connections(self) -> int:
        """The bot's gateway connections at the sandbox."""
        return int(self.control.gateway()["connections_by_bot"].get(self.id, 0))

    def lease_holder(self) -> int | None:
        """The pid holding the bot's lease, or None."""
        return lease_holder_pid(self.redis, self.keys, TOKEN)

    def lease_left(self) -> float:
        """Seconds until the bot's lease runs out unless renewed (negative: no lease)."""
        return float(self.redis.pttl(self.lease_key)) / 1000

    def add_member(self) -> str:
        """A new member of the guild, added through the sandbox; its id."""
        added = self.control.request(
            "POST", f"/guilds/{self.guild}/members", username=f"fo{uuid.uuid4().hex[:12]}"
        )
        return str(added["user"]["id"])

    def close(self) -> None:
        self.control.close()
        self.redis.close()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    """Poll *check* until it returns something truthy (returned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except TRANSIENT:
            result = None
        if result:
            return result
        time.sleep(POLL_S)
    raise TimeoutError(f"no {what} after {timeout:g} s")


# -- watching a failover ------------------------------------------------------------------


class Watch(threading.Thread):
    """Waits for something in a thread of its own; ``seconds`` is then the time since *since*
    (None if it did not happen within WATCH_LIMIT_S), ``error`` the last error met."""

    def __init__(self, since: float) -> None:
        super().__init__(daemon=True)  # one stuck on a dead socket must not keep us running
        self.since = since
        self.seconds: float | None = None
        self.error = ""

    def run(self) -> None:
        try:
            happened = self.wait(self.since + WATCH_LIMIT_S)
            if happened is not None:
                self.seconds = happened - self.since
        except Exception as exc:  # reported with the round (or moot: the run is ending)
            self.error = repr(exc)

    def wait(self, deadline: float) -> float | None:
        """When (monotonic) it happened, or None if not before *deadline*."""
        raise NotImplementedError


class PollWatch(Watch):
    """Polls *check* every POLL_S until it holds."""

    def __init__(self, check: Callable[[], bool], since: float) -> None:
        super().__init__(since)
        self.check = check

    def wait(self, deadline: float) -> float | None:
        while time.monotonic() < deadline:
            try:
                if self.check():
                    return time.monotonic()
            except TRANSIENT as exc:  # a server between owners: look again
                self.error = repr(exc)
            time.sleep(POLL_S)
        return None


class EventStream:
    """``GET /api/events?ticket=…`` on one instance, as a browser opens it; opened again
    (with a new ticket) if it ends or breaks."""

    def __init__(self, base_url: str, session: str) -> None:
        self.base_url, self.session = base_url, session
        self.http = requests.Session()
        self.response: requests.Response | None = None
        self.frames: FrameReader | None = None

    def open(self) -> None:
        self.close_response()
        ticket = self.http.post(
            f"{self.base_url}/api/events/ticket",
            timeout=10,
            headers={"Authorization": self.session},
        )
        ticket.raise_for_status()
        # Heartbeats come every 15 s: a minute without a byte is a dead stream.
        self.response = self.http.get(
            f"{self.base_url}/api/events",
            stream=True,
            params={"ticket": ticket.json()["ticket"]},
            timeout=(10, 60),
        )
        self.response.raise_for_status()
        self.frames = FrameReader(self.response.iter_content(chunk_size=None))
        if next(self.frames).comments != ["connected"]:
            raise ValueError("the stream did not start with ': connected'")

    def next_tagged(self, tag: str, deadline: float) -> int | None:
        """The number of the next message posted as ``"<tag> <number>"``, reopening the stream
        as needed; None once *deadline* (monotonic) passes."""
        while time.monotonic() < deadline:
            try:
                if self.frames is None:
                    self.open()
                assert self.frames is not None
                frame = self.frames.next_event()
                if frame.event == "message.create":
                    content = str(frame.json().get("content", ""))
                    if content.startswith(f"{tag} "):
                        return int(content.rsplit(" ", 1)[1])
                if frame.event == "end":
                    self.frames = None
            except TRANSIENT:
                self.frames = None
                time.sleep(POLL_S)
        return None

    def close_response(self) -> None:
        if self.response is not None:
            self.response.close()
        self.response = self.frames = None

    def close(self) -> None:
        self.close_response()
        self.http.close()


class EventWatch(Watch):
    """Waits for events to flow on *stream* after the owner went: the first message (of those
    a :class:`Poster` numbers) that arrives after some were lost, those posted while no
    process held the bot's connection (a new owner connects afresh: Discord replays nothing).

    If none were lost (a stopping owner may deliver until the survivor connects), events
    never stopped: the first arrival counts, once ``settled`` says the survivor is connected.
    """

    def __init__(self, stream: EventStream, tag: str, since: float) -> None:
        super().__init__(since)
        self.stream, self.tag = stream, tag
        self.settled = threading.Event()
        self.lost = 0

    def wait(self, deadline: float) -> float | None:
        expected, first = 0, None
        while (number := self.stream.next_tagged(self.tag, deadline)) is not None:
            now = time.monotonic()
            if number > expected:  # expected .. number - 1 never came
                self.lost = number - expected
                return now
            expected, first = number + 1, first or now
            if self.settled.is_set():
                return first
        return None


class Poster(threading.Thread):
    """Posts a message tagged *tag* through the sandbox every POLL_S until stopped: a message
    posted while no process holds the bot's connection is never seen, so the first one
    delivered tells when events flow again."""

    def __init__(self, sandbox: Sandbox, channel: str, tag: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{sandbox.base_url}/_sandbox/channels/{channel}/messages"
        self.tag = tag
        self.stopped = threading.Event()

    def run(self) -> None:
        with requests.Session() as http:
            n = 0
            while not self.stopped.is_set():
                try:
                    http.post(self.url, json={"content": f"{self.tag} {n}"}, timeout=10)
                except requests.RequestException:
                    pass
                n += 1
                self.stopped.wait(POLL_S)


@dataclass
class Round:
    """One failover's times from the kill or SIGTERM, in seconds (None: not within the limit)."""

    connection: float | None
    members: float | None
    events: float | None
    #: Messages posted after the kill or SIGTERM that never reached the event stream.
    lost: int
    #: How long before the kill the last full member list was loaded (Discord's cooldown
    #: counts from there).
    list_age: float
    #: kill only: how long the lease had to run at the kill.
    lease_left: float | None = None
    #: SIGTERM only: how long the stopped instance took to exit.
    exit_s: float | None = None


@dataclass
class Setup:
    """What every phase uses."""

    cluster: Cluster
    bot: Bot
    sandbox: Sandbox
    session: str
    channel: str
    #: monotonic time at which the last full member list was loaded (about).
    list_loaded: float


def owner_and_survivor(setup: Setup) -> tuple[GunicornServer, GunicornServer]:
    """The instance holding the bot's connection and the other one, once the bot is settled."""

    def settled() -> GunicornServer | None:
        holder = setup.cluster.holding(setup.bot.lease_holder())
        return holder if holder is not None and setup.bot.connections() == 1 else None

    owner: GunicornServer = wait_for(settled, "owner of the bot's connection")
    survivor = next(server for server in setup.cluster.servers if server is not owner)
    return owner, survivor


def after_renewal(bot: Bot) -> float:
    """Wait until the owner renews the bot's lease (its time to live jumps back up); the
    seconds it then has left.

    A crash right then leaves the lease's whole time to run out before another process may
    take over: the slowest failover, which the targets are about.
    """
    deadline = time.monotonic() + LEASE_S / 3 + 5  # the owner renews every third of it
    last = bot.lease_left()
    while time.monotonic() < deadline:
        time.sleep(0.005)
        left = bot.lease_left()
        if left > last + 0.1:
            return left
        last = left
    raise TimeoutError("the owner did not renew its lease")


def kill(server: GunicornServer) -> None:
    """``kill -9`` of the master and its workers: a crash, nothing released."""
    assert server.process is not None
    master = server.process.pid
    workers = children(master)
    os.kill(master, signal.SIGKILL)  # first, so it cannot start a worker in a killed one's place
    for worker in workers:
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait(10)


def failover(setup: Setup, how: str) -> Round:
    """Kill (``how="kill"``) or stop (``"stop"``) the owner; time the survivor's takeover."""
    owner, survivor = owner_and_survivor(setup)
    survivors = WorkerClients(survivor).connect()
    stream = EventStream(survivor.base_url, setup.session)
    try:
        # Each survivor worker sees the session, so each tries for the lease, as in service.
        for worker in survivors.workers:
            if survivors.get(worker, "/api/members?limit=1", setup.session)[0] != 200:
                raise RuntimeError(f"survivor worker {worker} does not serve the session")
        warm_up = f"warm-up-{uuid.uuid4().hex[:8]}"
        stream.open()
        setup.bot.control.request(
            "POST", f"/channels/{setup.channel}/messages", content=f"{warm_up} 0"
        )
        if stream.next_tagged(warm_up, time.monotonic() + 30) is None:
            raise RuntimeError("the event stream on the survivor delivers nothing before the kill")

        tag = f"after-{how}-{uuid.uuid4().hex[:8]}"
        survivor_workers = set(survivors.workers)
        lease_left = after_renewal(setup.bot) if how == "kill" else None
        started = time.monotonic()
        if how == "kill":
            kill(owner)
        else:
            assert owner.process is not None
            owner.process.terminate()
        member = setup.bot.add_member()
        list_age = started - setup.list_loaded

        pending = set(survivor_workers)

        def fresh() -> bool:
            pending.difference_update(
                {w for w in list(pending) if lists(survivors, w, setup.session, member)}
            )
            return not pending

        def connected() -> bool:
            return setup.bot.connections() == 1 and setup.bot.lease_holder() in survivor_workers

        events = EventWatch(stream, tag, started)
        watches: dict[str, Watch] = {
            "connection": PollWatch(connected, started),
            "events": events,
            "members": PollWatch(fresh, started),
        }
        poster = Poster(setup.sandbox, setup.channel, tag)
        for thread in (*watches.values(), poster):
            thread.start()
        exit_s = None
        if how == "stop":
            assert owner.process is not None
            owner.process.wait(60)
            exit_s = time.monotonic() - started
        for thread in watches.values():  # the connection's first
            thread.join(max(0.0, started + WATCH_LIMIT_S + 1 - time.monotonic()))
            events.settled.set()
        poster.stopped.set()
        poster.join(10)
        for name, watch in watches.items():
            if watch.seconds is None:
                print(
                    f"    ({how}: {name} not seen within {WATCH_LIMIT_S:g} s; last error "
                    f"{watch.error or 'none'})",
                    flush=True,
                )
        if watches["members"].seconds is not None:
            setup.list_loaded = started + watches["members"].seconds
        return Round(
            watches["connection"].seconds,
            watches["members"].seconds,
            events.seconds,
            events.lost,
            list_age,
            lease_left,
            exit_s,
        )
    finally:
        stream.close()
        survivors.close()
        setup.cluster.replace(owner)


# -- logouts and new members --------------------------------------------------------------


def logout_propagation(setup: Setup, repeats: int) -> list[float]:
    """Seconds from a logout answered by B until every worker of A answers 401, per repeat."""
    a, b = setup.cluster.servers
    clients = WorkerClients(a).connect()
    times = []
    try:
        with requests.Session() as http:
            for _ in range(repeats):
                session = http.post(
                    f"{a.base_url}/api/auth/login", json={"token": TOKEN}, timeout=60
                ).json()["sessionId"]
                for worker in clients.workers:  # each of A's workers knows the session
                    if clients.get(worker, "/api/channels", session)[0] != 200:
                        raise RuntimeError(f"worker {worker} does not serve a new session")
                http.post(
                    f"{b.base_url}/api/auth/logout", headers={"Authorization": session}, timeout=30
                ).raise_for_status()
                ended = time.monotonic()
                pending, last = set(clients.workers), ended
                # No pause between requests: the answer is expected within milliseconds.
                while pending and last - ended < WATCH_LIMIT_S:
                    for worker in list(pending):
                        status = clients.get(worker, "/api/channels", session)[0]
                        last = time.monotonic()
                        if status == 401:
                            pending.discard(worker)
                times.append(last - ended)
    finally:
        clients.close()
    return times


def member_visibility(setup: Setup, repeats: int) -> list[float]:
    """Seconds from adding a member through the sandbox until every worker of every instance
    lists it, per repeat."""
    clients = [WorkerClients(server).connect() for server in setup.cluster.servers]
    times = []
    try:
        for _ in range(repeats):
            started = time.monotonic()
            member = setup.bot.add_member()
            pending = {(c, w) for c in clients for w in c.workers}
            while pending and time.monotonic() - started < WATCH_LIMIT_S:
                pending = {(c, w) for c, w in pending if not lists(c, w, setup.session, member)}
                if pending:
                    time.sleep(VISIBILITY_POLL_S)
            times.append(time.monotonic() - started)
    finally:
        for client in clients:
            client.close()
    return times


# -- the run ------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:5.2f} s"


def summary(values: Sequence[float | None]) -> str:
    """Median and max of *values* in s; a value never seen counts as the watch's limit."""
    figures = [WATCH_LIMIT_S if v is None else v for v in values]
    missed = sum(1 for v in values if v is None)
    return f"median {median(figures):5.2f} s, max {max(figures):5.2f} s" + (
        f" ({missed} not within {WATCH_LIMIT_S:g} s)" if missed else ""
    )


def verdict(label: str, values: Sequence[float | None], target: float) -> str:
    worst = max(WATCH_LIMIT_S if v is None else v for v in values)
    return (
        f"  {label} <= {target:g} s: max {worst:.2f} s -> {'PASS' if worst <= target else 'FAIL'}"
    )


def run_failovers(setup: Setup, how: str, rounds: int) -> list[Round]:
    label = (
        "owner killed (kill -9 of master and workers)"
        if how == "kill"
        else "owner stopped (SIGTERM)"
    )
    print(f"  {label}, {rounds} rounds:", flush=True)
    results = []
    for n in range(rounds):
        result = failover(setup, how)
        results.append(result)
        how_long = (
            f"lease {result.lease_left:.2f} s to run at the kill, "
            if result.lease_left is not None
            else ""
        )
        exited = f", owner exited after {result.exit_s:.1f} s" if result.exit_s is not None else ""
        print(
            f"    round {n + 1}: one connection again {seconds(result.connection)}, fresh "
            f"members {seconds(result.members)}, events flowing again "
            f"{seconds(result.events)} ({result.lost} messages lost, {how_long}last full "
            f"member list {result.list_age:.1f} s before{exited})",
            flush=True,
        )
    for title, times in (
        ("one connection again", [r.connection for r in results]),
        ("fresh members", [r.members for r in results]),
        ("events flowing again", [r.events for r in results]),
    ):
        print(f"    {title:<22} {summary(times)}")
    return results


def settings(sandbox: Sandbox, prefix: str) -> dict[str, str]:
    """Every instance's environment: Redis mode under *prefix*, against *sandbox*."""
    return {
        **sandbox.env(),
        "REDIS_URL": SHARED_URL,
        "SESSION_SECRET": SECRET,
        "REDIS_KEY_PREFIX": prefix,
        "WEB_CONCURRENCY": str(WORKERS),
        # The default, set so that one in this shell's environment cannot change it.
        "BOT_LEASE_TIME": str(int(LEASE_S * 1000)),
        "LOG_LEVEL": "INFO",
        "RATE_LIMIT_MAX_REQUESTS": "100000000",
        "RATE_LIMIT_WINDOW": "1000",
        "MAX_SESSIONS_PER_TOKEN": "1000",
        "MAX_SESSIONS_PER_IP": "1000",
    }


def start(cluster: Cluster, bot: Bot, sandbox: Sandbox) -> Setup:
    """Two instances, a session (logged in on the first) and the bot's settled connection."""
    setup = Setup(cluster, bot, sandbox, "", "", 0.0)
    a = cluster.start()
    cluster.start()
    login = requests.post(f"{a.base_url}/api/auth/login", json={"token": TOKEN}, timeout=60)
    login.raise_for_status()
    setup.list_loaded = time.monotonic()  # a login waits for the member list
    setup.session = login.json()["sessionId"]
    setup.channel = requests.get(
        f"{a.base_url}/api/channels", timeout=30, headers={"Authorization": setup.session}
    ).json()[0]["id"]
    owner_and_survivor(setup)
    return setup


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # As Ctrl-C does: the finally blocks stop every server and delete the Redis keys.
    sys.exit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="failovers of each kind")
    parser.add_argument("--repeats", type=int, default=10, help="logouts and new members timed")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this directory")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    prefix = new_prefix()
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            Sandbox(
                "--members",
                str(args.members),
                "--token",
                TOKEN,
                "--channels",
                "2",
                "--messages",
                "1",
            ) as sandbox,
        ):
            log_dir = args.logs or Path(tmp)
            log_dir.mkdir(parents=True, exist_ok=True)
            print(
                f"Redis mode, 2 instances x {WORKERS} workers, one sandbox ({args.members} "
                f"members, Discord's 30 s member cooldown), BOT_LEASE_TIME {LEASE_S:g} s (the "
                f"default); times from the kill or SIGTERM, polled every {POLL_S * 1000:.0f} ms",
                flush=True,
            )
            cluster, bot = Cluster(settings(sandbox, prefix), log_dir), Bot(sandbox, prefix)
            try:
                setup = start(cluster, bot, sandbox)
                visibility = member_visibility(setup, args.repeats)
                logouts = logout_propagation(setup, args.repeats)
                print(
                    f"  new member on every worker of both instances: median "
                    f"{median(visibility) * 1000:.0f} ms, max {max(visibility) * 1000:.0f} ms "
                    f"({args.repeats} members)"
                )
                print(
                    f"  logout on B -> 401 on every worker of A: median "
                    f"{median(logouts) * 1000:.1f} ms, max {max(logouts) * 1000:.1f} ms "
                    f"({args.repeats} logouts)",
                    flush=True,
                )
                killed = run_failovers(setup, "kill", args.rounds)
                stopped = run_failovers(setup, "stop", args.rounds)
            finally:
                cluster.stop()
                bot.close()
    finally:
        delete_prefix(SHARED_URL, prefix)
    print("verdicts (issue 9):")
    for label, results in (("owner killed", killed), ("owner stopped", stopped)):
        print(
            verdict(f"{label}: events flowing again", [r.events for r in results], EVENTS_TARGET_S)
        )
        print(verdict(f"{label}: fresh members", [r.members for r in results], MEMBERS_TARGET_S))
    print(verdict("new member on every worker", visibility, VISIBILITY_TARGET_S))


if __name__ == "__main__":
    main()
