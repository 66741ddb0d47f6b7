"""The Discord service of Redis mode: one gateway connection per bot in the whole cluster.

:class:`ClusterDiscord` is :class:`~membersense.discord.local.LocalDiscord`
where a bot's connection may live in another process:

- A login takes the bot's lease if it is free and connects here, as memory
  mode does; if another process holds it, the login waits (bounded by
  ``LOGIN_TIMEOUT``) for that owner's published view.
- Reads come from the bot's connection when this process owns it, else from
  a local copy of the published view (:class:`~membersense.cluster.views.ViewCache`);
  message history from this process's own REST client for the bot, its token
  opened from the sealed copy kept with the sessions.
- A keeper thread, every third of ``BOT_LEASE_TIME``, renews the leases this
  process holds (an owner that cannot renew gives its connection up), tries
  for the lease of every bot it has seen sessions of (so a dead owner is
  replaced, requests or not, as its lease runs out: a held lease is tried
  again the moment it would end, a released one at once, on its notice), and,
  once a bot it owns has had no session
  anywhere for ``CONNECTION_LINGER``, closes the connection, deletes the
  published state and events, and gives the lease back.
- Stopping (SIGTERM) closes this process's connections and releases their
  leases at once, so another process takes over without waiting; the
  published state stays for it. From the signal on, a stopping process takes
  no lease (another worker stopping with it would otherwise take the one this
  one released, connect, and hand it over again a moment later).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from discord.http import HTTPClient

from membersense.cluster.bus import RedisEventBus
from membersense.cluster.connection import RedisConnection
from membersense.cluster.guards import SharedFailedTokens, SharedInvalidRequestBudget
from membersense.cluster.leases import LEASE_RELEASED, Leases
from membersense.cluster.notices import Notices
from membersense.cluster.sealing import TokenSealer
from membersense.cluster.views import PublishedBot, ViewCache, ViewMirror
from membersense.cluster.writer import Writer
from membersense.config import Settings
from membersense.discord import compat
from membersense.discord.connection import LEASE_LOST, RELEASED, BotConnection, State
from membersense.discord.errors import (
    DiscordTimeout,
    Failure,
    InvalidToken,
    NoGuilds,
    Reconnecting,
    ServiceClosed,
)
from membersense.discord.local import LocalDiscord
from membersense.discord.published import BotView, GuildView
from membersense.discord.rest import RestOperations, bounded, http_trace
from membersense.discord.service import BotLogin
from membersense.discord.tokens import fingerprint
from membersense.sessions.store import SessionStore, StoreUnavailable

__all__ = ["ClusterDiscord"]

log = logging.getLogger("membersense.cluster")

#: How often a login waiting on another process's connection looks at its published view.
LOGIN_POLL_S = 0.05
#: How often the keeper looks for bots with sessions it has not seen yet (in lease times).
DISCOVERY_EVERY = 2
#: How long after a held lease's end the keeper tries for it (its owner may be dead).
LEASE_END_MARGIN_S = 0.05
#: A copy of a published view is trusted this long without asking Redis for its version.
VIEW_TRUST_S = 0.2
#: How long a stopping process waits for its queued writes before it lets its bots go.
FLUSH_BEFORE_RELEASE_S = 2.0


class ClusterDiscord(LocalDiscord):
    """Logged-in bots of the cluster (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        bus: RedisEventBus,
        *,
        redis: RedisConnection,
        notices: Notices,
        writer: Writer,
        store: SessionStore,
        sealer: TokenSealer,
        clock: Callable[[], float] = time.monotonic,
        **observers: Any,
    ) -> None:
        super().__init__(
            settings,
            bus,
            has_sessions=lambda bot: True,  # the keeper decides, not the pool
            clock=clock,
            **observers,
            invalid_requests=SharedInvalidRequestBudget(
                redis, writer, settings.discord_invalid_request_limit, clock=clock
            ),
            failed_tokens=SharedFailedTokens(redis),
        )
        self._redis = redis
        self._writer = writer
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self.leases = Leases(redis, settings.bot_lease_time_s)
        self._mirror = ViewMirror(
            redis, writer, retention_s=settings.session_timeout_s, lease_token=self._lease_token
        )
        self.views = ViewCache(redis, trust_s=VIEW_TRUST_S, clock=clock)
        self._lock = threading.Lock()
        self._owned: dict[str, int] = {}  # bot -> fence of the lease this process holds
        self._renewed: dict[str, float] = {}  # bot -> when its lease was last renewed
        self._seen: dict[str, float] = {}  # bots with sessions this process knows of
        self._idle_since: dict[str, float] = {}
        self._tokens: dict[str, str] = {}
        self._rest_clients: dict[str, HTTPClient] = {}  # bot -> REST-only client (on the loop)
        self._redis_bus = bus
        self._owner_hooks: list[tuple[Callable[[str], None], Callable[[str], None]]] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._refusing = False  # shutting down: take on no bot
        self._retry_at: float | None = None  # when a lease another holds runs out first
        self._keeper: threading.Thread | None = None
        self._discovered_at = float("-inf")
        self.bridge.add_stop_hook(self._close_rest_clients)
        self._notices = notices
        notices.on(LEASE_RELEASED, self._lease_released)

    def __repr__(self) -> str:
        return f"<ClusterDiscord owned={len(self._owned)} seen={len(self._seen)}>"

    # -- leases ---------------------------------------------------------------------------

    def _lease_token(self, bot: str) -> str | None:
        fence = self._owned.get(bot)
        return self.leases.token(fence) if fence is not None else None

    def add_owner_hooks(self, owned: Callable[[str], None], unowned: Callable[[str], None]) -> None:
        """Call *owned(bot)* when this process takes a bot over (before it connects; on a
        thread that may block, never the loop) and *unowned(bot)* when it gives it up."""
        self._owner_hooks.append((owned, unowned))

    def _take_lease(self, bot: str) -> bool:
        """Whether this process owns *bot* (taking its lease if it is free)."""
        with self._lock:
            if bot in self._owned:
                return True
            if self._refusing:
                return False
        attempt = self.leases.attempt(bot)
        fence = attempt.fence
        if fence is None:
            self._retry_when_it_runs_out(attempt.runs_out_in_s)
            return False
        with self._lock:
            self._owned[bot] = fence
            self._renewed[bot] = self._clock()
        self._mirror.forget(bot)
        self._redis_bus.adopt(bot)  # its events go on where the last owner's stopped
        for owned, _ in self._owner_hooks:
            try:
                owned(bot)
            except Exception as exc:  # a hook's failure must not cost the bot its owner
                log.error("an owner hook failed: %s", type(exc).__name__)
        log.info(
            "took over a bot's gateway connection", extra={"fields": {"token": bot, "fence": fence}}
        )
        return True

    def _unowned(self, bot: str) -> None:
        for _, unowned in self._owner_hooks:
            try:
                unowned(bot)
            except Exception as exc:
                log.error("an owner hook failed: %s", type(exc).__name__)

    def refuse_new(self) -> None:
        """Shutting down: take no bot's lease from now on (see the module docstring)."""
        with self._lock:
            self._refusing = True

    def _retry_when_it_runs_out(self, seconds: float) -> None:
        # The keeper tries again the moment a held lease runs out (its owner may have
        # died just after renewing): its next round could be a third of the lease later.
        at = self._clock() + seconds + LEASE_END_MARGIN_S
        with self._lock:
            if self._retry_at is None or at < self._retry_at:
                self._retry_at = at

    def _lease_released(self, bot: str) -> None:
        if bot in self._seen and bot not in self._owned:
            self._wake.set()  # try at once rather than at the keeper's next round

    def _see(self, bot: str) -> None:
        new = bot not in self._seen
        self._seen[bot] = self._clock()
        if new:
            self._notices.start()
            self._start_keeper()

    # -- what connections publish ------------------------------------------------------------

    def _connection_changed(self, connection: BotConnection) -> None:
        # On the loop: mirror an owned, live connection's state into Redis (queued).
        bot = connection.fingerprint
        if self.pool.get(bot) is not connection or bot not in self._owned:
            return
        state = connection.state
        if state is State.READY:
            self._mirror.publish(bot, connection.view, None)
        elif state is State.FAILED:
            self._mirror.publish(bot, connection.view, connection.lifecycle.failure)

    # -- sessions ------------------------------------------------------------------------------

    def login(self, token: str) -> BotLogin:
        """Connect the bot here if no process does, else wait for its owner's published view."""
        self.failed_tokens.check(token)
        bot = fingerprint(token)
        self._tokens[bot] = token
        self._see(bot)
        deadline = self._clock() + self.settings.login_timeout_s
        try:
            while True:
                if self._take_lease(bot):
                    connection = self.pool.connect(token, max(0.1, deadline - self._clock()))
                    guilds = connection.view.summaries()
                    if not guilds:
                        raise NoGuilds()
                    return BotLogin(bot, guilds)
                published = self.views.get(bot, fresh=True)
                if published is not None:
                    if published.failure is not None:
                        raise published.failure.error()
                    guilds = published.view.summaries()
                    if guilds:
                        return BotLogin(bot, guilds)
                    raise NoGuilds()
                if self._clock() > deadline:
                    raise DiscordTimeout("Discord did not finish the login in time")
                self._stopping.wait(LOGIN_POLL_S)
                if self._stopping.is_set():
                    raise ServiceClosed()
        except InvalidToken:
            self.failed_tokens.add(token)
            raise

    def release(self, fingerprint: str) -> None:
        """A session of this bot ended here: the keeper looks at the bot now."""
        self._wake.set()

    def check(self, fingerprint: str) -> Failure | None:
        """Why sessions of this bot can no longer be served (a failure for good), or None.

        A bot between owners is not a failure: its sessions wait for the next one.
        """
        self._see(fingerprint)
        connection = self._owned_connection(fingerprint)
        if connection is not None:
            return connection.lifecycle.failure if connection.state is State.FAILED else None
        published = self.views.get(fingerprint)
        return published.failure if published is not None else None

    # -- where reads come from -------------------------------------------------------------

    def _owned_connection(self, bot: str) -> BotConnection | None:
        if bot not in self._owned:
            return None
        connection = self.pool.get(bot)
        if connection is None or connection.state not in (State.READY, State.FAILED):
            return None
        return connection

    def _published(self, bot: str, *, fresh: bool = False) -> PublishedBot:
        published = self.views.get(bot, fresh=fresh)
        if published is None:
            raise Reconnecting()
        if published.failure is not None:
            raise published.failure.error()
        return published

    def _view(self, fingerprint: str) -> BotView:
        connection = self._owned_connection(fingerprint)
        if connection is not None:
            return super()._view(fingerprint)
        return self._published(fingerprint).view

    def _await_members(self, fingerprint: str, guild_id: int) -> GuildView | None:
        if self._owned_connection(fingerprint) is not None:
            return super()._await_members(fingerprint, guild_id)
        deadline = self._clock() + self.settings.discord_timeout_s
        while True:
            guild = self._published(fingerprint, fresh=True).view.guilds.get(guild_id)
            if guild is None or guild.members is not None or self._clock() >= deadline:
                return guild
            self._stopping.wait(LOGIN_POLL_S)

    def _rest(self, fingerprint: str, operation: str, *args: Any) -> Any:
        if self._owned_connection(fingerprint) is not None:
            return super()._rest(fingerprint, operation, *args)
        token = self._token_for(fingerprint)
        rest = RestOperations(
            lambda: self._rest_client(fingerprint, token), self.settings.discord_timeout_s
        )
        return self.pool.call(
            getattr(rest, operation), *args, timeout=self.settings.discord_timeout_s
        )

    async def _rest_client(self, bot: str, token: str) -> HTTPClient:
        # On the loop: this process's own REST client for a bot another process connects.
        client = self._rest_clients.get(bot)
        if client is None:
            trace = http_trace(self._answered_for(bot))
            timeout = self.settings.discord_timeout_s
            # discord.py finds Discord through class attributes that a gateway connection
            # points at DISCORD_API_BASE; a process that connects no bot must do it too, or
            # its REST client would call discord.com instead of the Discord configured.
            compat.use_endpoints(self.settings.discord_api_base, self.settings.discord_gateway_url)
            try:
                client = await bounded(
                    compat.rest_client(token, http_trace=trace, ceiling=timeout), timeout
                )
            except BaseException:
                compat.release_endpoints()
                raise
            earlier = self._rest_clients.setdefault(bot, client)
            if earlier is not client:  # another call made one meanwhile: use that one
                await self._close_rest_client(client)
                client = earlier
        return client

    @staticmethod
    async def _close_rest_client(client: HTTPClient) -> None:
        try:
            await client.close()
        finally:
            compat.release_endpoints()

    async def _close_rest_clients(self) -> None:
        clients, self._rest_clients = list(self._rest_clients.values()), {}
        for client in clients:
            await self._close_rest_client(client)

    def _token_for(self, bot: str) -> str:
        """The bot's token: from a login here, else opened from a session's sealed copy."""
        token = self._tokens.get(bot)
        if token is not None:
            return token
        client, keys = self._redis.client, self._redis.keys
        ids = self._redis.call(lambda: client.zrange(keys.bot_sessions(bot), 0, 20))
        for raw_id in ids:
            key = keys.session(raw_id.decode())
            sealed = self._redis.call(partial(client.hget, key, "sealed"))
            opened = self._sealer.open(sealed.decode()) if sealed else None
            if opened is not None and fingerprint(opened) == bot:
                self._tokens[bot] = opened
                return opened
        raise Reconnecting()

    # -- the keeper ----------------------------------------------------------------------------

    def _start_keeper(self) -> None:
        with self._lock:
            if self._keeper is not None or self._stopping.is_set():
                return
            self._keeper = threading.Thread(
                target=self._keep, name="membersense-leases", daemon=True
            )
        self._keeper.start()

    def _keep(self) -> None:
        period = self.leases.lease_s / 3
        while not self._stopping.is_set():
            self._wake.wait(self._until_next_round(period))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._round()
            except StoreUnavailable:
                self._drop_expired_leases()
            except Exception as exc:  # the keeper must keep going whatever one round did
                log.error("lease keeper round failed: %s", type(exc).__name__)

    def _until_next_round(self, period: float) -> float:
        with self._lock:
            retry_at, self._retry_at = self._retry_at, None
        if retry_at is None:
            return period
        return max(0.0, min(period, retry_at - self._clock()))

    def _round(self) -> None:
        now = self._clock()
        if now - self._discovered_at >= DISCOVERY_EVERY * self.leases.lease_s:
            self._discovered_at = now
            self._discover()
        for bot in list(self._seen):
            sessions = self._store.count_for(bot)
            if bot in self._owned:
                self._keep_owned(bot, sessions, now)
            elif sessions == 0:
                self._forget(bot)
            elif self._take_lease(bot):
                self._connect_owned(bot)

    def _keep_owned(self, bot: str, sessions: int, now: float) -> None:
        fence = self._owned[bot]
        if not self.leases.renew(bot, fence):
            self._lose(bot)
            return
        self._renewed[bot] = now
        connection = self.pool.get(bot)
        failed = connection is None or connection.state is State.FAILED
        if sessions == 0:
            since = self._idle_since.setdefault(bot, now)
            if failed or now - since >= self.settings.connection_linger_s:
                self._give_up(bot, fence)
            return
        self._idle_since.pop(bot, None)
        if connection is None or connection.lifecycle.ending:
            self._connect_owned(bot)  # a takeover's login failed: try again
        else:
            self._mirror.refresh(bot, list(connection.view.guilds))

    def _connect_owned(self, bot: str) -> None:
        try:
            token = self._token_for(bot)
        except Reconnecting:  # no session with a token we can open: nobody to connect for
            fence = self._owned.pop(bot, None)
            if fence is not None:
                self._unowned(bot)
                self.leases.release(bot, fence)
            return
        try:
            self.pool.start(token, self.settings.login_timeout_s)
        except ServiceClosed:
            pass

    def _lose(self, bot: str) -> None:
        """Another process owns *bot* now (or the lease ran out): give the connection up."""
        with self._lock:
            self._owned.pop(bot, None)
            self._renewed.pop(bot, None)
        self._mirror.forget(bot)
        self._unowned(bot)
        self._close_connection(bot, LEASE_LOST)
        log.warning(
            "lost a bot's lease; its connection is closed", extra={"fields": {"token": bot}}
        )

    def _give_up(self, bot: str, fence: int) -> None:
        """*bot* has had no session for the linger: disconnect, delete its state, free it."""
        connection = self.pool.get(bot)
        guild_ids = list(connection.view.guilds) if connection is not None else []
        self._close_connection(bot, RELEASED, wait=True)
        self._mirror.withdraw(bot, guild_ids)
        with self._lock:
            self._owned.pop(bot, None)
            self._renewed.pop(bot, None)
        self._unowned(bot)
        self.leases.release(bot, fence)
        self._forget(bot)
        log.info("closed an unused bot connection", extra={"fields": {"token": bot}})

    def _forget(self, bot: str) -> None:
        self._seen.pop(bot, None)
        self._idle_since.pop(bot, None)
        self._tokens.pop(bot, None)
        self.views.forget(bot)
        if bot in self._rest_clients and self.bridge.running:
            client = self._rest_clients.pop(bot)
            self.bridge.submit(self._close_rest_client, client)

    def _close_connection(self, bot: str, reason: str, *, wait: bool = False) -> None:
        connection = self.pool.get(bot)
        if connection is None or not self.bridge.running:
            return
        future = self.bridge.submit(connection.close, reason)
        if wait:
            try:
                future.result(self.settings.discord_timeout_s)
            except Exception as exc:
                log.warning("closing a bot connection failed: %s", type(exc).__name__)

    def _drop_expired_leases(self) -> None:
        # Redis is unreachable: a lease not renewed for its whole time may be someone
        # else's by now. Give those connections up rather than risk two.
        now = self._clock()
        for bot, renewed in list(self._renewed.items()):
            if now - renewed >= self.leases.lease_s:
                self._lose(bot)

    def _discover(self) -> None:
        # Bots with sessions made by other processes (or before this one started): they
        # need an owner even if no request for them ever comes here.
        client, keys = self._redis.client, self._redis.keys
        pattern = keys.bot_sessions("*")
        found = self._redis.call(lambda: list(client.scan_iter(match=pattern, count=1000)))
        for key in found:
            bot = keys.bot_of_sessions_key(key.decode())
            if bot and bot not in self._seen:
                self._seen[bot] = self._clock()

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the keeper, close this process's connections, release their leases. Idempotent."""
        self._stopping.set()
        self._wake.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=5)
        super().close()  # the pool closes the connections (SHUTDOWN: state and events stay)
        # What this process published must be in Redis before another takes its bots over:
        # the next owner numbers events on from the streams (a late write of ours would
        # collide with its numbers) and delivers webhooks from their last delivered event.
        self._writer.flush(FLUSH_BEFORE_RELEASE_S)
        with self._lock:
            owned, self._owned = dict(self._owned), {}
        for bot, fence in owned.items():
            try:
                self.leases.release(bot, fence)  # another process takes over at once
            except StoreUnavailable:
                pass  # it expires by itself
