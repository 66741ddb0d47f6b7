"""Webhook subscriptions in Redis: registered anywhere, delivered by the bot's owner.

Each subscription is a hash (its secret sealed like the bot tokens), listed in
a set per session and a set per bot. Any process registers, lists and deletes
them (request threads, blocking on Redis). The process that owns a bot's
gateway connection is the one that delivers its events
(:mod:`membersense.webhooks.service`), on its event loop, which must not
block: so that process keeps a *mirror* of the bot's subscriptions, loaded
when it takes the bot over (:meth:`RedisSubscriptionStore.mirror`, on the
keeper's thread), kept in step by a notice whenever a subscription is added
or removed anywhere, and written back through the
:class:`~membersense.cluster.writer.Writer` as deliveries go.

Each subscription remembers the last event delivered to it (``cursor``); a
new owner first delivers what came after it in the bot's streams
(:meth:`~membersense.cluster.bus.RedisEventBus.since`), so an owner that dies
loses no delivery: at least once, the event id being the receiver's key to
drop the ones it already had.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from membersense.cluster.connection import RedisConnection
from membersense.cluster.notices import Notices
from membersense.cluster.sealing import TokenSealer
from membersense.cluster.writer import Writer
from membersense.webhooks.store import Subscription, SubscriptionStore

__all__ = ["WEBHOOKS_CHANGED", "RedisSubscriptionStore"]

#: The notice sent when a bot's subscriptions change (its argument: the bot).
WEBHOOKS_CHANGED = "webhooks-changed"

#: KEYS: subscription, session's set, bot's set. ARGV: limit, id, notices channel, notice,
#: then the subscription's field/value pairs. 1 if added, 0 past the limit.
_ADD = """
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

#: KEYS: subscription. ARGV: field/value pairs, set only if the subscription still exists.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 1
"""

#: The fields a deliverer may change.
_DELIVERY_FIELDS = frozenset({"disabled", "failures", "last_error", "last_delivery_at", "cursor"})


def _bot_of(topic: str) -> str:
    return topic.partition("/")[0]


class RedisSubscriptionStore(SubscriptionStore):
    """Subscriptions shared by every process (see the module docstring)."""

    def __init__(
        self, connection: RedisConnection, notices: Notices, writer: Writer, sealer: TokenSealer
    ) -> None:
        self._redis = connection
        self._keys = connection.keys
        self._notices = notices
        self._writer = writer
        self._sealer = sealer
        self._lock = threading.Lock()
        self._mirrored: set[str] = set()  # bots whose subscriptions this process delivers
        self._mirror: dict[str, Subscription] = {}
        self._on_mirrored: list[Callable[[list[Subscription]], None]] = []
        self._add = connection.script(_ADD)
        self._update = connection.script(_UPDATE)
        notices.on(WEBHOOKS_CHANGED, self._changed)

    def __repr__(self) -> str:
        return f"<RedisSubscriptionStore mirrored={len(self._mirrored)}>"

    # -- records <-> hashes ----------------------------------------------------------------

    def _fields(self, subscription: Subscription) -> list[Any]:
        fields = {
            "session": subscription.session_id,
            "topic": subscription.topic,
            "guild": subscription.guild_id,
            "url": subscription.url,
            "events": json.dumps(list(subscription.events)),
            "secret": self._sealer.seal(subscription.secret),
            "created": repr(subscription.created_at),
            **self._delivery_fields(
                disabled=subscription.disabled,
                failures=subscription.failures,
                last_error=subscription.last_error,
                last_delivery_at=subscription.last_delivery_at,
                cursor=subscription.cursor,
            ),
        }
        return [item for pair in fields.items() for item in pair]

    @staticmethod
    def _delivery_fields(**changes: Any) -> dict[str, str]:
        out = {}
        for name, value in changes.items():
            if name == "disabled":
                out[name] = "1" if value else "0"
            elif value is None:
                out[name] = ""
            else:
                out[name] = repr(value) if isinstance(value, float) else str(value)
        return out

    def _record(self, subscription_id: str, raw: dict[bytes, bytes]) -> Subscription | None:
        if not raw:
            return None
        values = {k.decode(): v.decode() for k, v in raw.items()}
        secret = self._sealer.open(values.get("secret", ""))
        if secret is None:  # sealed under another SESSION_SECRET: its session ended too
            return None
        return Subscription(
            id=subscription_id,
            session_id=values["session"],
            topic=values["topic"],
            guild_id=values["guild"],
            url=values["url"],
            events=tuple(json.loads(values.get("events") or "[]")),
            secret=secret,
            created_at=float(values.get("created") or 0),
            disabled=values.get("disabled") == "1",
            failures=int(values.get("failures") or 0),
            last_error=values.get("last_error") or None,
            last_delivery_at=float(values["last_delivery_at"])
            if values.get("last_delivery_at")
            else None,
            cursor=values.get("cursor") or None,
        )

    def _load(self, ids: list[str]) -> list[Subscription]:
        def read() -> list[Any]:
            pipeline = self._redis.client.pipeline(transaction=False)
            for subscription_id in ids:
                pipeline.hgetall(self._keys.webhook(subscription_id))
            return list(pipeline.execute())

        raws = self._redis.call(read) if ids else []
        return [
            r
            for r in (self._record(i, raw) for i, raw in zip(ids, raws, strict=True))
            if r is not None
        ]

    def _members(self, key: str) -> list[str]:
        return sorted(
            m.decode() for m in self._redis.call(lambda: self._redis.client.smembers(key))
        )

    # -- the interface ----------------------------------------------------------------------

    def add(self, subscription: Subscription, *, limit: int) -> bool:
        """Add it unless its session has *limit* already (atomically), and tell the owner."""
        bot = _bot_of(subscription.topic)
        keys = [
            self._keys.webhook(subscription.id),
            self._keys.session_webhooks(subscription.session_id),
            self._keys.bot_webhooks(bot),
        ]
        args = [
            limit,
            subscription.id,
            self._keys.notices,
            f"{WEBHOOKS_CHANGED} {bot}",
            *self._fields(subscription),
        ]
        return bool(self._redis.call(lambda: self._add(keys=keys, args=args)))

    def get(self, subscription_id: str) -> Subscription | None:
        """The subscription (from the mirror when this process delivers it)."""
        mirrored = self._mirror.get(subscription_id)
        if mirrored is not None:
            return mirrored
        found = self._load([subscription_id])
        return found[0] if found else None

    def delivering(self, subscription_id: str) -> Subscription | None:
        """The mirrored subscription, or None when this process does not deliver it (never
        reads Redis: the deliverer calls it on the event loop)."""
        return self._mirror.get(subscription_id)

    def of_session(self, session_id: str) -> list[Subscription]:
        """The session's subscriptions, oldest first."""
        found = self._load(self._members(self._keys.session_webhooks(session_id)))
        return sorted(found, key=lambda s: s.created_at)

    def of_topic(self, topic: str) -> list[Subscription]:
        """The topic's subscriptions, from the mirror (only the owner delivers: never blocks)."""
        return [s for s in list(self._mirror.values()) if s.topic == topic]

    def update(self, subscription_id: str, **changes: Any) -> Subscription | None:
        """Change delivery fields in the mirror now and in Redis soon (never blocks)."""
        if not _DELIVERY_FIELDS.issuperset(changes):
            raise ValueError(f"not delivery fields: {sorted(set(changes) - _DELIVERY_FIELDS)}")
        with self._lock:
            current = self._mirror.get(subscription_id)
            if current is None:
                return None
            updated = self._mirror[subscription_id] = dataclasses.replace(current, **changes)
        key = self._keys.webhook(subscription_id)
        items = [item for pair in self._delivery_fields(**changes).items() for item in pair]
        script = self._update
        # Only while the subscription exists: a deleted one must not come back.
        self._writer.submit(lambda pipeline: script(keys=[key], args=items, client=pipeline))
        return updated

    def remove(self, subscription_id: str) -> Subscription | None:
        """Remove a subscription everywhere."""
        found = self._load([subscription_id])
        if not found:
            return None
        record = found[0]
        bot = _bot_of(record.topic)

        def delete() -> Any:
            pipeline = self._redis.client.pipeline(transaction=True)
            pipeline.delete(self._keys.webhook(subscription_id))
            pipeline.srem(self._keys.session_webhooks(record.session_id), subscription_id)
            pipeline.srem(self._keys.bot_webhooks(bot), subscription_id)
            pipeline.publish(self._keys.notices, f"{WEBHOOKS_CHANGED} {bot}")
            return pipeline.execute()

        self._redis.call(delete)
        with self._lock:
            self._mirror.pop(subscription_id, None)
        return record

    def remove_session(self, session_id: str) -> list[Subscription]:
        """Remove every subscription of a session (it ended)."""
        removed = []
        for subscription_id in self._members(self._keys.session_webhooks(session_id)):
            record = self.remove(subscription_id)
            if record is not None:
                removed.append(record)
        key = self._keys.session_webhooks(session_id)
        self._redis.call(lambda: self._redis.client.delete(key))
        return removed

    # -- the owner's mirror -------------------------------------------------------------------

    def mirror(self, bot: str) -> list[Subscription]:
        """Deliver *bot*'s subscriptions from now on: load them (blocks; not for the loop).

        Subscriptions of sessions that no longer exist (expired in Redis) are removed.
        """
        return self._reload(bot, take=True)

    def on_mirrored(self, listener: Callable[[list[Subscription]], None]) -> None:
        """Call *listener(subscriptions)* (on the notices thread) with the subscriptions made
        elsewhere that the mirror of a bot delivered here has just gained."""
        self._on_mirrored.append(listener)

    def unmirror(self, bot: str) -> None:
        """Another process delivers *bot*'s subscriptions now."""
        with self._lock:
            self._mirrored.discard(bot)
            for key in [k for k, s in self._mirror.items() if _bot_of(s.topic) == bot]:
                del self._mirror[key]

    def _changed(self, bot: str) -> None:
        # A notice (the notices thread): reload a bot this process delivers.
        if bot in self._mirrored:
            self._reload(bot, take=False)

    def _reload(self, bot: str, *, take: bool) -> list[Subscription]:
        loaded = self._load(self._members(self._keys.bot_webhooks(bot)))
        live = []
        for subscription in loaded:
            session = self._keys.session(subscription.session_id)
            if self._redis.call(partial(self._redis.client.exists, session)):
                live.append(subscription)
            else:
                self.remove(subscription.id)
        with self._lock:
            if take:
                self._mirrored.add(bot)
            elif bot not in self._mirrored:  # given up while this reload read Redis
                return []
            wanted = {subscription.id for subscription in live}
            for key in [
                k for k, s in self._mirror.items() if _bot_of(s.topic) == bot and k not in wanted
            ]:
                del self._mirror[key]
            added = [s for s in live if s.id not in self._mirror]
            for subscription in live:
                # A mirrored record is fresher than Redis (its delivery fields are written
                # back through the writer): keep it.
                self._mirror.setdefault(subscription.id, subscription)
            mirrored = [self._mirror[i] for i in sorted(wanted)]
        if added and not take:  # (a takeover begins them itself, from the bot's streams)
            for listener in list(self._on_mirrored):
                listener(added)
        return mirrored
