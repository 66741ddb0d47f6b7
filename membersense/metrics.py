"""Prometheus metrics: what MemberSense counts, and how gunicorn's workers share them.

Other modules record through the small functions here, e.g.
``metrics.discord_response(status)``, ``metrics.bulkhead_rejected("messages")``,
``metrics.gateway_event(connection, event)``; ``GET /metrics``
(:mod:`membersense.api.metrics`) renders them with :func:`exposition`.

**Several processes.** prometheus-client keeps each process's values in its
own memory unless ``PROMETHEUS_MULTIPROC_DIR`` names a directory, in which
case every process writes its values to files there and a scrape sums them
(its *multiprocess mode*). It decides which once, when it is first imported,
so this module imports it only when the first metric is used (in a worker,
serving) and never at import time: gunicorn's master imports MemberSense to
read its configuration, long before :func:`gunicorn_when_ready` picks the
directory. Under gunicorn that hook creates a private directory unless the
operator set one (wiped at start either way), :func:`gunicorn_child_exit`
drops a dead worker's live gauges, and :func:`gunicorn_on_exit` removes the
private directory. Outside gunicorn (tests, ``flask run``) values stay in
process memory.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from flask import Response, g, request

from membersense.config import load_settings

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "MULTIPROC_DIR_ENV",
    "bulkhead_rejected",
    "discord_response",
    "exposition",
    "gateway_event",
    "gunicorn_child_exit",
    "gunicorn_on_exit",
    "gunicorn_when_ready",
    "rate_limited",
    "record_request",
    "set_active_sessions",
]

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Route label of requests that matched no route (never the raw path: unbounded).
UNMATCHED_ROUTE = "<unmatched>"
#: Methods counted by name; any other token a client sends is counted as "other".
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Latency buckets, seconds: cached reads take about a millisecond, logins up to LOGIN_TIMEOUT.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_GATEWAY_LIVE_EVENTS = frozenset({"connect", "resumed"})
_GATEWAY_DOWN_EVENTS = frozenset({"disconnect", "close"})


class _Metrics:
    """Every metric object of the process, built once, on first use."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # One histogram counts and times requests: its _count is the request counter. A
        # separate counter would cost every request a third write (each is a locked write
        # to a memory-mapped file in multiprocess mode).
        self.requests: Histogram = Histogram(
            "membersense_http_request_duration_seconds",
            "HTTP requests answered, by route, method and status, with the time from their "
            "arrival in the app to the response (_count: requests)",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
        )
        # In memory mode one worker holds every session; a shared store (Redis mode)
        # gives every worker the same count: the freshest value is the answer.
        self.active_sessions: Gauge = Gauge(
            "membersense_sessions_active",
            "Open sessions (as of the last scrape)",
            multiprocess_mode="livemostrecent",
        )
        # Each process owns its connections: the live workers' values add up.
        self.gateway_connections: Gauge = Gauge(
            "membersense_gateway_connections",
            "Discord gateway connections open and live",
            multiprocess_mode="livesum",
        )
        self.discord_responses: Counter = Counter(
            "membersense_discord_responses",
            "Answers of Discord's REST API, by HTTP status",
            ["status"],
        )
        self.rate_limited: Counter = Counter(
            "membersense_rate_limited_requests", "Requests refused with 429 by the rate limit"
        )
        self.bulkhead_rejections: Counter = Counter(
            "membersense_bulkhead_rejections",
            "Requests refused with 503 because their kind's share of threads was taken",
            ["kind"],
        )
        #: (route, method, status) -> histogram child: one dict lookup per request
        #: instead of a label resolution under prometheus-client's lock.
        self.request_children: dict[tuple[str, str, int], Any] = {}
        self.live_gateways: weakref.WeakSet[object] = weakref.WeakSet()
        self.gateway_lock = threading.Lock()


_built: _Metrics | None = None
_build_lock = threading.Lock()


def _metrics() -> _Metrics:
    built = _built
    return built if built is not None else _build()


def _build() -> _Metrics:
    global _built
    with _build_lock:
        if _built is None:
            _built = _Metrics()
        return _built


# -- recording ---------------------------------------------------------------------


def record_request(response: Response) -> Response:
    """``after_request`` hook: count the request by route, method and status and time it."""
    req = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
    rule = req.url_rule
    method = req.method
    key = (
        rule.rule if rule is not None else UNMATCHED_ROUTE,
        method if method in _KNOWN_METHODS else "other",
        response.status_code,
    )
    built = _metrics()
    child = built.request_children.get(key)
    if child is None:
        route, method_label, status = key
        child = built.request_children[key] = built.requests.labels(
            route, method_label, str(status)
        )
    started = g.get("started")  # set by membersense.access before any other hook
    child.observe(time.perf_counter() - started if started is not None else 0.0)
    return response


def discord_response(status: int) -> None:
    """Discord's REST API answered with *status* (called from the aiohttp trace)."""
    _metrics().discord_responses.labels(str(status)).inc()


def rate_limited() -> None:
    """A request was refused by the per-IP rate limit."""
    _metrics().rate_limited.inc()


def bulkhead_rejected(kind: str) -> None:
    """A request of *kind* (a fixed name, e.g. ``"messages"``) found its bulkhead full."""
    _metrics().bulkhead_rejections.labels(kind).inc()


def set_active_sessions(count: int) -> None:
    """The number of open sessions (set when scraped)."""
    _metrics().active_sessions.set(count)


def gateway_event(connection: object, event: str) -> None:
    """Follow *connection*'s gateway state from discord.py's event names.

    ``connect`` (READY) and ``resumed`` make it live; ``disconnect`` and
    ``close`` (ours, when the connection is closed for good) make it not;
    other events are ignored, so this may be called for every event. The
    gauge counts this process's live connections. Call it on the loop thread.
    """
    if event in _GATEWAY_LIVE_EVENTS:
        live = True
    elif event in _GATEWAY_DOWN_EVENTS:
        live = False
    else:
        return
    built = _metrics()
    with built.gateway_lock:
        if live:
            built.live_gateways.add(connection)
        else:
            built.live_gateways.discard(connection)
        built.gateway_connections.set(len(built.live_gateways))


# -- exposition --------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition of every metric (every worker's, summed) and its type."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
    )
    from prometheus_client.multiprocess import MultiProcessCollector

    _metrics()  # ours appear (at zero) even before anything was recorded
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- gunicorn hooks (they run in gunicorn's master) ------------------------------------

#: The directory :func:`gunicorn_when_ready` created, removed again on exit.
_private_dir: str | None = None


def gunicorn_when_ready(server: Any) -> None:
    """Give the workers about to be forked one directory for their metric files.

    The operator's ``PROMETHEUS_MULTIPROC_DIR`` is used when set (its metric
    files from an earlier run are removed: stale counters would be summed in);
    otherwise, when metrics are served, a private temporary directory.
    """
    global _private_dir
    configured = os.environ.get(MULTIPROC_DIR_ENV)
    if configured:
        os.makedirs(configured, exist_ok=True)
        for stale in glob.glob(os.path.join(configured, "*.db")):
            os.remove(stale)
        return
    if not load_settings().metrics_enabled:
        return  # nothing is served: each worker may keep its values in memory
    _private_dir = tempfile.mkdtemp(prefix="membersense-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = _private_dir


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges; its counters stay in the sums."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def gunicorn_on_exit(server: Any) -> None:
    """Remove the private metrics directory (an operator's is left in place)."""
    global _private_dir
    if _private_dir is not None:
        shutil.rmtree(_private_dir, ignore_errors=True)
        if os.environ.get(MULTIPROC_DIR_ENV) == _private_dir:
            del os.environ[MULTIPROC_DIR_ENV]
        _private_dir = None
