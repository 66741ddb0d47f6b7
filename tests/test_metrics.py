"""Metrics in one process: GET /metrics, who may read it, and what the counters count.

Values live in the test process's prometheus-client registry, shared by every
app a test builds, so assertions compare before and after.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from membersense import metrics
from membersense.config import ConfigError, load_settings
from tests.servers import ROOT

TOKEN = "metrics-token-0123456789"


def read(client: FlaskClient, **headers: str) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def value(text: str, name: str, **labels: str) -> float:
    """The sum of *name*'s samples whose labels include *labels* (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_are_an_unknown_path_unless_configured(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    for method in ("GET", "POST"):
        response = client.open("/metrics", method=method)
        assert response.status_code == 404
        assert response.get_json() == {"error": "Not Found"}


def test_a_token_is_required_when_set(make_app: Callable[..., Flask]) -> None:
    client = make_app(METRICS_TOKEN=TOKEN).test_client()
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.get_json() == {"error": "Unauthorized"}
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert "membersense_http_request_duration_seconds_count" in read(
        client, Authorization=f"Bearer {TOKEN}"
    )
    # METRICS_PUBLIC does not lift a token that is set.
    public = make_app(METRICS_TOKEN=TOKEN, METRICS_PUBLIC="1").test_client()
    assert public.get("/metrics").status_code == 401


def test_public_metrics_need_nothing_and_are_never_rate_limited(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(METRICS_PUBLIC="1", RATE_LIMIT_MAX_REQUESTS=1).test_client()
    for _ in range(5):
        text = read(client)
    for name in (
        "membersense_http_request_duration_seconds",
        "membersense_sessions_active",
        "membersense_gateway_connections",
        "membersense_rate_limited_requests_total",
        "membersense_discord_responses_total",
        "membersense_bulkhead_rejections_total",
    ):
        assert f"# TYPE {name} " in text


@pytest.mark.parametrize("raw", ["short", "has spaces in it, long enough", "é" * 20])
def test_a_weak_or_malformed_token_stops_start_up(raw: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={"METRICS_TOKEN": raw}, dotenv=False)
    assert "METRICS_TOKEN" in str(excinfo.value)
    assert raw not in str(excinfo.value)  # a secret is never echoed


def test_the_token_stays_out_of_the_settings_repr() -> None:
    settings = load_settings(environ={"METRICS_TOKEN": TOKEN}, dotenv=False)
    assert settings.metrics_token == TOKEN and settings.metrics_enabled
    assert TOKEN not in repr(settings)


def test_requests_are_counted_by_route_template_and_status(
    make_app: Callable[..., Flask], login: Callable[..., str]
) -> None:
    client = make_app(METRICS_PUBLIC="1").test_client()
    before = read(client)
    session = login(test_client=client)
    for _ in range(3):
        assert client.get("/api/members", headers={"Authorization": session}).status_code == 200
    assert client.get("/api/members").status_code == 401
    assert client.get("/dashboard/no-such-file.js").status_code == 404
    assert client.get("/a/raw/path/42").status_code == 404
    after = read(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        delta(
            "membersense_http_request_duration_seconds_count",
            route="/api/members",
            method="GET",
            status="200",
        )
        == 3
    )
    assert (
        delta("membersense_http_request_duration_seconds_count", route="/api/members", status="401")
        == 1
    )
    assert (
        delta(
            "membersense_http_request_duration_seconds_count",
            route="/api/auth/login",
            method="POST",
            status="200",
        )
        == 1
    )
    assert (
        delta(
            "membersense_http_request_duration_seconds_count",
            route="/dashboard/<path:filename>",
            status="404",
        )
        == 1
    )
    assert (
        delta(
            "membersense_http_request_duration_seconds_count",
            route=metrics.UNMATCHED_ROUTE,
            status="404",
        )
        == 1
    )
    assert delta("membersense_http_request_duration_seconds_sum", route="/api/members") > 0
    assert (
        delta(
            "membersense_http_request_duration_seconds_bucket",
            route="/api/members",
            status="200",
            le="+Inf",
        )
        == 3
    )
    assert "/a/raw/path" not in after  # never the raw path
    assert value(after, "membersense_sessions_active") == 1


def test_unknown_methods_are_one_label(make_app: Callable[..., Flask]) -> None:
    client = make_app(METRICS_PUBLIC="1").test_client()
    before = read(client)
    assert client.open("/api/members", method="BREW").status_code == 405
    after = read(client)
    assert (
        value(after, "membersense_http_request_duration_seconds_count", method="other")
        - value(before, "membersense_http_request_duration_seconds_count", method="other")
        == 1
    )
    assert "BREW" not in after


def test_rate_limited_requests_are_counted(make_app: Callable[..., Flask]) -> None:
    client = make_app(METRICS_PUBLIC="1", RATE_LIMIT_MAX_REQUESTS=2).test_client()
    before = value(read(client), "membersense_rate_limited_requests_total")
    statuses = [client.get("/api/members").status_code for _ in range(4)]
    assert statuses == [401, 401, 429, 429]
    assert value(read(client), "membersense_rate_limited_requests_total") - before == 2


def test_discord_answers_bulkheads_and_gateways_are_recorded(
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(METRICS_PUBLIC="1").test_client()
    before = read(client)
    metrics.discord_response(429)
    metrics.discord_response(200)
    metrics.discord_response(200)
    metrics.bulkhead_rejected("messages")

    class Connection:
        pass

    first, second = Connection(), Connection()
    baseline = value(before, "membersense_gateway_connections")
    metrics.gateway_event(first, "connect")
    metrics.gateway_event(second, "connect")
    metrics.gateway_event(second, "message_create")  # ignored
    metrics.gateway_event(first, "resumed")  # already live: still one
    after = read(client)
    assert (
        value(after, "membersense_discord_responses_total", status="200")
        - value(before, "membersense_discord_responses_total", status="200")
        == 2
    )
    assert (
        value(after, "membersense_discord_responses_total", status="429")
        - value(before, "membersense_discord_responses_total", status="429")
        == 1
    )
    assert (
        value(after, "membersense_bulkhead_rejections_total", kind="messages")
        - value(before, "membersense_bulkhead_rejections_total", kind="messages")
        == 1
    )
    assert value(after, "membersense_gateway_connections") == baseline + 2
    metrics.gateway_event(first, "disconnect")
    metrics.gateway_event(second, "close")
    assert value(read(client), "membersense_gateway_connections") == baseline
    del first, second
    gc.collect()


def test_metrics_are_not_measured_when_not_served(make_app: Callable[..., Flask]) -> None:
    served = make_app(METRICS_PUBLIC="1").test_client()
    unserved = make_app().test_client()
    before = value(
        read(served), "membersense_http_request_duration_seconds_count", route="/_ah/health"
    )
    for _ in range(3):
        assert unserved.get("/_ah/health").status_code == 200
    assert (
        value(read(served), "membersense_http_request_duration_seconds_count", route="/_ah/health")
        == before
    )


def test_importing_membersense_leaves_prometheus_client_unimported() -> None:
    # prometheus-client picks per-process or multiprocess values when first imported;
    # gunicorn's master imports MemberSense (gunicorn.conf.py, wsgi) before its
    # when_ready hook sets PROMETHEUS_MULTIPROC_DIR for the workers it then forks.
    code = (
        "import sys, wsgi, membersense.serving, membersense.cli; "
        "sys.exit('prometheus_client' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
