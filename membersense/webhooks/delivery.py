"""Delivering events to webhook receivers, on an event loop, with aiohttp.

Each subscription has an outbox (a queue) and one worker task, so a
subscription's events arrive in order and a slow receiver delays only its
own. A delivery is a signed ``POST`` (see :mod:`~membersense.webhooks.signing`)
of ``{"id", "type", "guildId", "timestamp", "data"}``, the event as the
long-poll shows it; its ``id`` is the event's, the same on every try, so a
receiver drops duplicates by it. Each try is bounded by ``WEBHOOK_TIMEOUT``;
network errors, timeouts, 5xx and 429 are tried again, up to
``WEBHOOK_MAX_ATTEMPTS`` tries, after an exponential backoff with jitter; 3xx
(redirects are not followed) and other 4xx are not. A delivery whose tries
all failed counts as one failure; ``WEBHOOK_DISABLE_AFTER`` failures in a row
disable the subscription, and ``GET /api/webhooks`` shows why.

A successful delivery counts as activity of the subscription's session
(*touch*, run off the loop, at most every so often), so a client that only
listens is not expired.

Everything here runs on the loop; nothing blocks it (the session touch runs in
the loop's executor). Texts kept as ``last_error`` are ours, never an
exception's or the receiver's.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import orjson
from yarl import URL

from membersense.bus import Event
from membersense.webhooks.addresses import BlockedAddress, GuardedResolver, check_literal
from membersense.webhooks.signing import signature
from membersense.webhooks.store import Subscription, SubscriptionStore

__all__ = ["DeliveryPolicy", "Deliverer"]

log = logging.getLogger("membersense.webhooks")

USER_AGENT = "MemberSense-Webhooks/1"
#: Why a delivery could not even be tried.
BLOCKED = "the URL's host resolves to a private or reserved address"


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard deliveries try (see the module docstring); the backoff is for tests to shorten."""

    timeout_s: float
    max_attempts: int
    disable_after: int
    allow_private: bool
    #: The backoff before the second try; it doubles per try, up to *backoff_max_s*.
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    #: Events an outbox may hold; past it the receiver is too far behind and is disabled.
    max_pending: int = 1000
    #: How often a delivery may refresh its session's idle timer, in seconds.
    touch_every_s: float = 30.0

    def backoff(self, tries_done: int, draw: Callable[[], float]) -> float:
        """Seconds to wait after *tries_done* failed tries: the doubling delay, half of it
        jittered so receivers that failed together do not come back together."""
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (tries_done - 1))
        return delay / 2 + draw() * delay / 2


@dataclass(frozen=True)
class _Outcome:
    error: str | None = None  # None: delivered
    again: bool = False  # worth another try


_DELIVERED = _Outcome()


class _Outbox:
    __slots__ = ("queue", "task", "last_touch")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.last_touch = float("-inf")


class Deliverer:
    """The outboxes of one process's subscriptions (see the module docstring).

    Every method runs on the event loop. *touch(session_id)* marks a session
    active; it runs in the loop's default executor. *draw* and *sleep* are for
    tests.
    """

    def __init__(
        self,
        store: SubscriptionStore,
        policy: DeliveryPolicy,
        *,
        touch: Callable[[str], object],
        draw: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.policy = policy
        self._touch = touch
        self._draw = draw
        self._sleep = sleep
        self._outboxes: dict[str, _Outbox] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Deliverer outboxes={len(self._outboxes)}>"

    def pending(self, subscription_id: str) -> int:
        """Events waiting in a subscription's outbox (the one being delivered included)."""
        outbox = self._outboxes.get(subscription_id)
        return (
            0
            if outbox is None
            else outbox.queue.qsize() + (outbox.task is not None and not outbox.task.done())
        )

    def enqueue(self, subscription: Subscription, event: Event) -> None:
        """Deliver *event* to *subscription* after the events already queued for it."""
        if self._closed:
            return
        outbox = self._outboxes.get(subscription.id)
        if outbox is None:
            outbox = self._outboxes[subscription.id] = _Outbox()
        if outbox.queue.qsize() >= self.policy.max_pending:
            self.store.update(
                subscription.id,
                disabled=True,
                last_error=(
                    f"{self.policy.max_pending} events were waiting: the receiver is too slow"
                ),
            )
            log.warning(
                "webhook disabled: its receiver fell behind",
                extra={"fields": {"webhook": subscription.id}},
            )
            self.stop(subscription.id)
            return
        outbox.queue.put_nowait(event)
        if outbox.task is None or outbox.task.done():
            outbox.task = asyncio.get_running_loop().create_task(
                self._work(subscription.id, outbox), name=f"membersense-webhook-{subscription.id}"
            )

    def stop(self, subscription_id: str) -> None:
        """Drop a subscription's outbox (it was deleted, disabled, or its session ended)."""
        outbox = self._outboxes.pop(subscription_id, None)
        if (
            outbox is not None
            and outbox.task is not None
            and outbox.task is not asyncio.current_task()
        ):
            outbox.task.cancel()

    async def close(self) -> None:
        """Stop every delivery and close the HTTP session. Idempotent."""
        self._closed = True
        tasks = [o.task for o in self._outboxes.values() if o.task is not None]
        self._outboxes.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- the worker of one outbox ---------------------------------------------------------

    async def _work(self, subscription_id: str, outbox: _Outbox) -> None:
        while not outbox.queue.empty():
            event = outbox.queue.get_nowait()
            subscription = self.store.delivering(subscription_id)
            if subscription is None or subscription.disabled:
                self.stop(subscription_id)
                return
            error = await self._deliver(subscription, event)
            if error is None:
                self.store.update(
                    subscription_id, failures=0, last_delivery_at=time.time(), cursor=event.id
                )
                self._touch_session(subscription, outbox)
                continue
            failures = subscription.failures + 1
            disabled = failures >= self.policy.disable_after
            self.store.update(
                subscription_id, failures=failures, last_error=error, disabled=disabled
            )
            if disabled:
                log.warning(
                    "webhook disabled after failed deliveries",
                    extra={"fields": {"webhook": subscription_id, "failures": failures}},
                )
                self.stop(subscription_id)
                return

    def _touch_session(self, subscription: Subscription, outbox: _Outbox) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - outbox.last_touch < self.policy.touch_every_s:
            return
        outbox.last_touch = loop.time()
        loop.run_in_executor(None, self._touch_quietly, subscription.session_id)

    def _touch_quietly(self, session_id: str) -> None:
        try:
            self._touch(session_id)
        except Exception as exc:  # activity is a courtesy; never let it break deliveries
            log.warning("marking a webhook's session active failed: %s", type(exc).__name__)

    async def _deliver(self, subscription: Subscription, event: Event) -> str | None:
        """Every try of one delivery; None when delivered, else the last error."""
        body = orjson.dumps(event.to_json(), default=dict)
        outcome = _DELIVERED
        for tries in range(self.policy.max_attempts):
            if tries:
                await self._sleep(self.policy.backoff(tries, self._draw))
            outcome = await self._try(subscription, event, body)
            if outcome.error is None or not outcome.again:
                break
        if outcome.error is None:
            return None
        return (
            f"{outcome.error} (after {self.policy.max_attempts} tries)"
            if outcome.again
            else outcome.error
        )

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=None if self.policy.allow_private else GuardedResolver(),
                use_dns_cache=False,  # each new connection resolves (and is checked) again
                limit=100,
                limit_per_host=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def _try(self, subscription: Subscription, event: Event, body: bytes) -> _Outcome:
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-MemberSense-Event": event.type,
            "X-MemberSense-Delivery": event.id,
            "X-MemberSense-Timestamp": str(timestamp),
            "X-MemberSense-Signature": signature(subscription.secret, timestamp, body),
        }
        timeout = self.policy.timeout_s
        try:
            if not self.policy.allow_private:  # aiohttp resolves names only: check the rest
                check_literal(URL(subscription.url).host or "")
            async with self._http().post(
                subscription.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as answer:
                status = answer.status
        except BlockedAddress:
            return _Outcome(BLOCKED)
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                return _Outcome(BLOCKED)
            return _Outcome("the URL's host could not be resolved", again=True)
        except TimeoutError:
            return _Outcome(f"no answer within {timeout:g} s", again=True)
        except (aiohttp.ClientError, OSError):
            return _Outcome("the connection to the receiver failed", again=True)
        if 200 <= status < 300:
            return _DELIVERED
        if 300 <= status < 400:
            return _Outcome(f"answered {status}: redirects are not followed")
        return _Outcome(f"answered {status}", again=status >= 500 or status == 429)
