"""Outgoing webhooks of one process: registering them, and handing events to the deliverer.

:class:`Webhooks` is what the API and the runtime use:

- :meth:`~Webhooks.register`, :meth:`~Webhooks.of_session`, :meth:`~Webhooks.remove`
  for ``/api/webhooks`` (request threads): the URL is checked (see
  :mod:`~membersense.webhooks.addresses`; resolving the host runs on the event
  loop, bounded), the subscription is stored with a new secret.
- :meth:`~Webhooks.session_ended`, a listener of the session manager: a
  session's subscriptions end with it, and their outboxes are dropped.

**Who delivers.** :class:`Webhooks` subscribes to the event bus, and bus
subscribers are called in the process that *publishes* an event, on its
publishing thread: the Discord loop of the process that holds the bot's
gateway connection. That process looks the topic's subscriptions up in the
store and its :class:`~membersense.webhooks.delivery.Deliverer` delivers them
on that same loop. With a shared store (Redis mode), subscriptions made
through any instance are delivered once, by the instance that owns the
connection; :meth:`Webhooks.dispatch` is that seam.

**Late news.** The delivering process may hear of a subscription a moment
after it was made (in Redis mode the owner learns of one made elsewhere by a
notice). It keeps its topics' latest events a short while
(:mod:`~membersense.webhooks.recent`), and a subscription's deliveries here
begin with those published since it was made: at its first event, or as
soon as the store reports it (:meth:`Webhooks.begin`), whichever comes
first, on the loop, so nothing is delivered twice or out of order. A new
owner of a bot begins its subscriptions from Redis instead
(:meth:`Webhooks.resume`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from nanoid import generate
from yarl import URL

from membersense.bridge import Bridge, BridgeClosed, BridgeForked
from membersense.bus import EVENT_TYPES, Event, EventBus
from membersense.config import Settings
from membersense.discord.errors import ServiceClosed
from membersense.errors import BadRequest, TooManyRequests
from membersense.sessions import SessionRecord
from membersense.webhooks.addresses import BlockedAddress, check_url, resolve_checked
from membersense.webhooks.delivery import Deliverer, DeliveryPolicy
from membersense.webhooks.recent import RecentEvents
from membersense.webhooks.signing import new_secret
from membersense.webhooks.store import Subscription, SubscriptionStore

__all__ = ["Webhooks"]

log = logging.getLogger("membersense.webhooks")

#: Bound on resolving a webhook's host at registration, in seconds.
RESOLVE_TIMEOUT_S = 5.0
#: Bound on handing an event to the loop from a thread that is not the loop's.
_HANDOFF_TIMEOUT_S = 5.0


class Webhooks:
    """The webhooks of one process (see the module docstring).

    *bridge* is the loop deliveries run on: the Discord service's, where events
    are published; without one (a fake Discord service in tests) a bridge of
    its own is made, started on first use. *touch(session_id)* marks a session
    active (the session store's ``get``).
    """

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        store: SubscriptionStore,
        *,
        bridge: Bridge | None,
        touch: Callable[[str], object],
        recent: RecentEvents | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        #: Events published here lately, which late-known subscriptions begin with.
        self.recent = recent if recent is not None else RecentEvents()
        self._begun_lock = threading.Lock()
        #: topic -> ids of its subscriptions whose deliveries began in this process
        self._begun: dict[str, set[str]] = {}
        self._own_bridge = bridge is None
        self.bridge = bridge if bridge is not None else Bridge("membersense-webhooks")
        policy = DeliveryPolicy(
            timeout_s=settings.webhook_timeout_s,
            max_attempts=settings.webhook_max_attempts,
            disable_after=settings.webhook_disable_after,
            allow_private=settings.webhook_allow_private,
            touch_every_s=min(30.0, settings.session_timeout_s / 4),
        )
        self.deliverer = Deliverer(store, policy, touch=touch)
        self.bridge.add_stop_hook(self.deliverer.close)
        self._unsubscribe = bus.subscribe(self._on_event)

    def __repr__(self) -> str:
        return f"<Webhooks {self.store!r}>"

    # -- the API (request threads) --------------------------------------------------------

    def register(
        self, session: SessionRecord, guild_id: int, topic: str, url: Any, events: Any
    ) -> Subscription:
        """A new subscription of *session* to *topic*: 400 for a bad or refused URL or event
        list, 429 past ``MAX_WEBHOOKS_PER_SESSION``."""
        try:
            parsed = check_url(url)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        wanted = _event_types(events)
        limit = self.settings.max_webhooks_per_session
        if len(self.store.of_session(session.id)) >= limit:
            raise _too_many(limit)
        if not self.settings.webhook_allow_private:
            self._check_destination(parsed)
        subscription = Subscription(
            id=generate(size=21),
            session_id=session.id,
            topic=topic,
            guild_id=str(guild_id),
            url=str(parsed),
            events=wanted,
            secret=new_secret(),
            created_at=time.time(),
        )
        if not self.store.add(subscription, limit=limit):
            raise _too_many(limit)
        if any(s.id == subscription.id for s in self.store.of_topic(topic)):
            self.begin([subscription])  # this process delivers it (else the one that does)
        log.info(
            "webhook registered",
            extra={
                "fields": {
                    "webhook": subscription.id,
                    "session": session.short_id,
                    "events": len(wanted),
                }
            },
        )
        return subscription

    def _check_destination(self, url: URL) -> None:
        try:
            self.bridge.call(resolve_checked, url, timeout=RESOLVE_TIMEOUT_S)
        except BlockedAddress:
            raise BadRequest(
                "url must not lead to a loopback, private, link-local, multicast "
                "or reserved address"
            ) from None
        except (BridgeClosed, BridgeForked):
            raise ServiceClosed() from None
        except (OSError, TimeoutError):
            raise BadRequest("url's host could not be resolved") from None

    def of_session(self, session_id: str) -> list[Subscription]:
        """The session's subscriptions, oldest first."""
        return self.store.of_session(session_id)

    def remove(self, session_id: str, subscription_id: str) -> bool:
        """Delete one of the session's subscriptions; False if it has none by that id."""
        found = self.store.get(subscription_id)
        if found is None or found.session_id != session_id:
            return False
        if self.store.remove(subscription_id) is None:
            return False
        self._stop([subscription_id])
        return True

    def resume(
        self,
        subscriptions: list[Subscription],
        since: Callable[[str, str | None, int], list[Event] | None],
    ) -> None:
        """Deliver, first, what these subscriptions' receivers have not had yet.

        Redis mode's new owner of a bot calls this (off the loop) before it connects:
        *since(topic, event_id, not_before_ms)* gives the events after a subscription's
        last delivered one, or, for one never delivered to, those since it was made (None
        when the stream no longer has them all).
        """
        batches = []
        for subscription in subscriptions:
            if subscription.disabled:
                continue
            missed = since(
                subscription.topic, subscription.cursor, int(subscription.created_at * 1000)
            )
            if missed is None:
                log.warning(
                    "a webhook missed events that are no longer kept",
                    extra={"fields": {"webhook": subscription.id}},
                )
                missed = []
            batches.append((subscription, [e for e in missed if subscription.wants(e.type)]))
        if batches:
            self.bridge.call(self._resume, batches, timeout=_HANDOFF_TIMEOUT_S)

    async def _resume(self, batches: list[tuple[Subscription, list[Event]]]) -> None:
        # Begun from Redis: what this process itself published lately is not theirs to get.
        with self._begun_lock:
            for subscription, _ in batches:
                self._begun.setdefault(subscription.topic, set()).add(subscription.id)
        for subscription, events in batches:
            for event in events:
                self.deliverer.enqueue(subscription, event)

    def begin(self, subscriptions: list[Subscription]) -> None:
        """This process delivers these subscriptions from now on (it just heard of them):
        their deliveries begin with the events of their topic it published since they were
        made (see the module docstring). Any thread."""
        # Only those that missed something: the others begin with their first event.
        missed = [s for s in subscriptions if self.recent.since(s.topic, int(s.created_at * 1000))]
        if not missed:
            return
        if self.bridge.in_loop_thread():
            self._begin(missed)
            return
        try:
            self.bridge.submit(self._begin_async, missed)
        except (BridgeClosed, BridgeForked):  # shutting down: nothing is delivered any more
            pass

    async def _begin_async(self, subscriptions: list[Subscription]) -> None:
        self._begin(subscriptions)

    def _begin(self, subscriptions: list[Subscription], until: Event | None = None) -> None:
        # On the loop: the first time, a subscription gets what was published since it was
        # made (up to *until*, the event being dispatched, which follows).
        with self._begun_lock:
            new = []
            for subscription in subscriptions:
                begun = self._begun.setdefault(subscription.topic, set())
                if subscription.id not in begun:
                    begun.add(subscription.id)
                    new.append(subscription)
        for subscription in new:
            for event in self.recent.since(
                subscription.topic,
                int(subscription.created_at * 1000),
                until=until.id if until is not None else None,
            ):
                if subscription.wants(event.type):
                    self.deliverer.enqueue(subscription, event)

    def forget_bot(self, bot: str) -> None:
        """Another process publishes *bot*'s events now: what this one published of them,
        and which of their subscriptions it began, no longer count. Any thread."""

        def of_bot(topic: str) -> bool:
            return topic.partition("/")[0] == bot  # topics are "<bot>/<guild>" (bus.topic_of)

        self.recent.forget(of_bot)
        with self._begun_lock:
            for topic in [t for t in self._begun if of_bot(t)]:
                del self._begun[topic]

    def session_ended(self, record: SessionRecord, reason: str) -> None:
        """A session ended (the session manager's listener): its subscriptions end too."""
        removed = self.store.remove_session(record.id)
        if removed:
            self._stop([s.id for s in removed])

    def _stop(self, subscription_ids: list[str]) -> None:
        loop = self.bridge.loop
        if loop is None:  # never started, or stopped: no outbox exists
            return
        for subscription_id in subscription_ids:
            if self.bridge.in_loop_thread():
                self.deliverer.stop(subscription_id)
            else:
                try:
                    loop.call_soon_threadsafe(self.deliverer.stop, subscription_id)
                except RuntimeError:  # the loop closed meanwhile
                    return

    def close(self) -> None:
        """Take no more events; stop a bridge of our own (the Discord service stops a shared
        one, and the deliverer with it). Idempotent."""
        self._unsubscribe()
        if self._own_bridge:
            self.bridge.stop()

    # -- events (the publishing thread) ---------------------------------------------------

    def _on_event(self, event: Event) -> None:
        self.recent.add(event)
        if not self.store.of_topic(event.topic):
            if event.topic in self._begun:  # its last subscription went
                with self._begun_lock:
                    self._begun.pop(event.topic, None)
            return
        if self.bridge.in_loop_thread():
            self.dispatch(event)
            return
        # Published elsewhere (tests publish from their own thread): hand it to the loop,
        # waiting, so a thread's events keep their order.
        try:
            self.bridge.call(self._dispatch_async, event, timeout=_HANDOFF_TIMEOUT_S)
        except (BridgeClosed, BridgeForked, TimeoutError):
            log.warning(
                "an event could not be handed to the webhook deliverer",
                extra={"fields": {"event": event.type}},
            )

    async def _dispatch_async(self, event: Event) -> None:
        self.dispatch(event)

    def dispatch(self, event: Event) -> None:
        """Queue *event* for every subscription of its topic that wants it (on the loop),
        after what a subscription new here missed of its topic's events."""
        asyncio.get_running_loop()  # refuses to run anywhere else
        subscriptions = self.store.of_topic(event.topic)
        with self._begun_lock:  # forget the ones gone, so this stays as small as the topic's
            self._begun.setdefault(event.topic, set()).intersection_update(
                s.id for s in subscriptions
            )
        self._begin(subscriptions, until=event)
        for subscription in subscriptions:
            if subscription.wants(event.type):
                self.deliverer.enqueue(subscription, event)


def _event_types(raw: Any) -> tuple[str, ...]:
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(e, str) and e in EVENT_TYPES for e in raw)
    ):
        raise BadRequest(f"events must be a non-empty list of: {', '.join(EVENT_TYPES)}")
    return tuple(dict.fromkeys(raw))


def _too_many(limit: int) -> TooManyRequests:
    return TooManyRequests(
        f"Too many webhooks for this session (at most {limit}): delete one first"
    )
