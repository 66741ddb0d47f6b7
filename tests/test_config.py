"""Configuration loading: names, defaults and validation from the design document."""

from __future__ import annotations

from pathlib import Path

import pytest

from membersense.config import ConfigError, Settings, load_settings


def test_defaults_match_the_design_document() -> None:
    settings = load_settings({})
    assert settings.port == 8080
    assert settings.max_concurrent_users == 100
    assert settings.allowed_origins == ("*",)
    assert settings.rate_limit_window == 60000
    assert settings.rate_limit_max_requests == 100
    assert settings.session_timeout == 1800000
    assert settings.cleanup_interval == 300000
    assert settings.trusted_proxies == 0
    assert settings.max_content_length == 64 * 1024
    assert settings.log_level == "INFO"
    assert settings.log_format == "json"
    assert settings.discord_api_base == "https://discord.com/api/v10"
    assert settings.discord_gateway_url == ""
    assert settings.rate_limit_storage_uri == "memory://"
    assert settings.discord_cdn_base == "https://cdn.discordapp.com"


def test_environment_values_are_parsed() -> None:
    settings = load_settings(
        {
            "PORT": "9000",
            "MAX_CONCURRENT_USERS": "5",
            "ALLOWED_ORIGINS": "https://a.example, https://b.example/",
            "RATE_LIMIT_WINDOW": "1000",
            "SESSION_TIMEOUT": "250",
            "TRUSTED_PROXIES": "2",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "TEXT",
            "DISCORD_API_BASE": "http://127.0.0.1:8765/api/v10/",
            "DISCORD_GATEWAY_URL": "ws://127.0.0.1:8765/ws",
            "DISCORD_CDN_BASE": "http://127.0.0.1:8765/",
            "UNRELATED": "ignored",
        }
    )
    assert settings.port == 9000
    assert settings.max_concurrent_users == 5
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.rate_limit_window == 1000
    assert settings.session_timeout_s == 0.25
    assert settings.trusted_proxies == 2
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "text"
    assert settings.discord_api_base == "http://127.0.0.1:8765/api/v10"
    assert settings.discord_gateway_url == "ws://127.0.0.1:8765/ws"
    assert settings.discord_cdn_base == "http://127.0.0.1:8765"


def test_a_wildcard_anywhere_allows_every_origin() -> None:
    assert load_settings({"ALLOWED_ORIGINS": "https://a.example,*"}).allowed_origins == ("*",)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "eighty", "PORT must be an integer >= 1, got 'eighty'"),
        ("PORT", "70000", "PORT must be a TCP port between 1 and 65535, got '70000'"),
        ("MAX_CONCURRENT_USERS", "0", "MAX_CONCURRENT_USERS must be an integer >= 1, got '0'"),
        ("MAX_CONCURRENT_USERS", "-3", "MAX_CONCURRENT_USERS must be an integer >= 1, got '-3'"),
        ("RATE_LIMIT_WINDOW", "0", "RATE_LIMIT_WINDOW must be an integer >= 1000 (milliseconds)"),
        ("RATE_LIMIT_WINDOW", "1500", "RATE_LIMIT_WINDOW must be a whole number of seconds"),
        ("RATE_LIMIT_MAX_REQUESTS", "1.5", "RATE_LIMIT_MAX_REQUESTS must be an integer >= 1"),
        ("SESSION_TIMEOUT", "", "SESSION_TIMEOUT must be an integer >= 1 (milliseconds)"),
        ("CLEANUP_INTERVAL", "soon", "CLEANUP_INTERVAL must be an integer >= 1 (milliseconds)"),
        ("TRUSTED_PROXIES", "-1", "TRUSTED_PROXIES must be an integer >= 0"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of json, text, got 'xml'"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("ALLOWED_ORIGINS", "example.com", "ALLOWED_ORIGINS must list origins like"),
        ("ALLOWED_ORIGINS", " , ", "ALLOWED_ORIGINS must be '*' or a comma-separated list"),
        ("DISCORD_API_BASE", "discord.com", "DISCORD_API_BASE must be a http/https URL"),
        ("DISCORD_CDN_BASE", "ftp://cdn.example", "DISCORD_CDN_BASE must be a http/https URL"),
        ("DISCORD_GATEWAY_URL", "http://x", "DISCORD_GATEWAY_URL must be a ws/wss URL"),
        ("RATE_LIMIT_STORAGE_URI", "mongodb://x", "RATE_LIMIT_STORAGE_URI must be memory://"),
        ("REQUEST_HEADER_TIMEOUT", "0", "REQUEST_HEADER_TIMEOUT must be an integer >= 1 (millis"),
        ("REQUEST_BODY_MIN_RATE", "fast", "REQUEST_BODY_MIN_RATE must be an integer >= 1 (bytes"),
        ("MAX_CONNECTIONS_PER_IP", "-1", "MAX_CONNECTIONS_PER_IP must be an integer >= 0"),
        (
            "MAX_CONCURRENT_HISTORY_READS",
            "0",
            "MAX_CONCURRENT_HISTORY_READS must be an integer >= 1",
        ),
        ("MAX_CONCURRENT_LOGINS", "x", "MAX_CONCURRENT_LOGINS must be an integer >= 1"),
    ],
)
def test_bad_values_name_the_variable_and_the_expectation(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings({name: value})
    message = str(excinfo.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_dotenv_file_seeds_but_never_overrides_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("PORT=9123\nMAX_CONCURRENT_USERS=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAX_CONCURRENT_USERS", "3")
    monkeypatch.delenv("PORT", raising=False)
    try:
        settings = load_settings()
        assert settings.port == 9123
        assert settings.max_concurrent_users == 3
    finally:
        # load_dotenv writes into os.environ; monkeypatch only restores what it set.
        monkeypatch.delenv("PORT", raising=False)


def test_overrides_win_and_accept_typed_values() -> None:
    settings = load_settings({"PORT": "9000"}, {"PORT": 9001, "ALLOWED_ORIGINS": ["https://x.io"]})
    assert settings.port == 9001
    assert settings.allowed_origins == ("https://x.io",)


def test_every_setting_has_a_distinct_environment_name() -> None:
    names = Settings.env_names()
    assert len(names) == len(set(names.values()))
    assert "RATE_LIMIT_WINDOW" in names and "DISCORD_TIMEOUT" in names


def test_event_and_webhook_settings() -> None:
    settings = load_settings({})
    assert settings.threads == 32
    assert settings.event_stream_max_seconds == 270  # under Cloud Run's 300 s request timeout
    assert settings.max_event_streams == 16 and settings.event_stream_cap == 16
    assert settings.webhook_allow_private is False
    assert settings.webhook_timeout_s == 5.0
    assert (
        settings.webhook_max_attempts,
        settings.webhook_disable_after,
        settings.max_webhooks_per_session,
    ) == (5, 5, 5)
    # Streams never take more than half of the threads.
    assert load_settings({"THREADS": "8", "MAX_EVENT_STREAMS": "100"}).event_stream_cap == 4
    assert load_settings({"THREADS": "1"}).event_stream_cap == 0
    for raw, value in (("1", True), ("true", True), ("Yes", True), ("0", False), ("off", False)):
        assert load_settings({"WEBHOOK_ALLOW_PRIVATE": raw}).webhook_allow_private is value
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"WEBHOOK_ALLOW_PRIVATE": "maybe"})
    assert str(excinfo.value) == "WEBHOOK_ALLOW_PRIVATE must be 1 or 0 (true or false), got 'maybe'"
    with pytest.raises(ConfigError):
        load_settings({"EVENT_STREAM_MAX_SECONDS": "0"})


@pytest.mark.parametrize(
    ("redis_url", "storage", "expected"),
    [
        ("redis://10.0.0.5:6379/0", "memory://", "redis://10.0.0.5:6379/0"),
        ("unix:///run/redis.sock", "memory://", "redis+unix:///run/redis.sock"),  # limits' name
        ("redis://10.0.0.5:6379/0", "redis://10.0.0.6:6379/1", "redis://10.0.0.6:6379/1"),
        ("", "memory://", "memory://"),
    ],
)
def test_redis_mode_counts_the_rate_limit_in_its_redis_unless_told_otherwise(
    redis_url: str, storage: str, expected: str
) -> None:
    settings = load_settings(
        {"REDIS_URL": redis_url, "SESSION_SECRET": "s" * 32, "RATE_LIMIT_STORAGE_URI": storage}
    )
    assert settings.rate_limit_storage == expected


def test_serving_limits_and_their_defaults() -> None:
    settings = load_settings({})
    assert settings.request_header_timeout_s == 5.0
    assert settings.request_body_min_rate == 500
    assert settings.max_connections_per_ip == 50
    assert settings.max_concurrent_history_reads is None  # follows THREADS
    assert (settings.history_reads_share, settings.logins_share) == (4, 4)  # THREADS / 8
    tuned = load_settings(
        {
            "REQUEST_HEADER_TIMEOUT": "1500",
            "MAX_CONNECTIONS_PER_IP": "0",
            "THREADS": "3",
            "MAX_CONCURRENT_HISTORY_READS": " ",
        }
    )
    assert tuned.request_header_timeout_s == 1.5
    assert tuned.max_connections_per_ip == 0  # no cap
    assert (tuned.history_reads_share, tuned.logins_share) == (1, 1)  # never none
