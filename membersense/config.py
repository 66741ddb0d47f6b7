"""Every MemberSense setting: its environment name, default and validation.

Settings come from the process environment, optionally seeded from a ``.env``
file in the working directory (real environment variables win). The names and
defaults of the original design are kept (durations in milliseconds); the
rest are additions documented in the README's configuration table.

A bad value stops start-up with one line naming the variable and what it
expects (:class:`ConfigError`), so a typo in a deployment never turns into a
silently different service.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ConfigError", "Settings", "load_settings"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "text")


class ConfigError(ValueError):
    """A setting has a value MemberSense cannot run with.

    The message is a single line meant for the operator, e.g.
    ``RATE_LIMIT_WINDOW must be a positive whole number of milliseconds, got 'abc'``.
    """


def _integer(minimum: int, unit: str = "") -> Callable[[str, str], int]:
    what = f"an integer >= {minimum}" + (f" ({unit})" if unit else "")

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be {what}, got {raw!r}")
        return value

    return parse


def _optional_integer(minimum: int) -> Callable[[str, str], int | None]:
    """An integer, or None when left blank (the setting then follows another)."""
    parse_integer = _integer(minimum)

    def parse(name: str, raw: str) -> int | None:
        return None if not raw.strip() else parse_integer(name, raw)

    return parse


def _port(name: str, raw: str) -> int:
    value = _integer(1)(name, raw)
    if value > 65535:
        raise ConfigError(f"{name} must be a TCP port between 1 and 65535, got {raw!r}")
    return value


def _whole_seconds_ms(name: str, raw: str) -> int:
    # The rate limiter (limits' moving window) counts in whole seconds.
    value = _integer(1000, "milliseconds")(name, raw)
    if value % 1000:
        raise ConfigError(
            f"{name} must be a whole number of seconds in milliseconds (e.g. 60000), got {raw!r}"
        )
    return value


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if not origins:
        raise ConfigError(f"{name} must be '*' or a comma-separated list of origins, got {raw!r}")
    if "*" in origins:
        return ("*",)
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(
                f"{name} must list origins like https://app.example.com, got {origin!r}"
            )
    return origins


def _choice(choices: tuple[str, ...], *, upper: bool) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _url(schemes: tuple[str, ...], *, optional: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().rstrip("/")
        if optional and not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL, got {raw!r}")
        return value

    return parse


def _storage_uri(name: str, raw: str) -> str:
    value = raw.strip()
    scheme = urlsplit(value).scheme
    if scheme not in (
        "memory",
        "redis",
        "rediss",
        "redis+unix",
        "redis+sentinel",
        "redis+cluster",
        "valkey",
    ):
        raise ConfigError(f"{name} must be memory:// or a redis:// URL, got {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true or false), got {raw!r}")


def _redis_url(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    scheme = urlsplit(value).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{name} must be a redis://, rediss:// or unix:// URL, got a {scheme or 'bare'} value"
        )
    return value


def _secret(name: str, raw: str) -> str:
    # Never echoed in an error message: it is a secret.
    return raw.strip()


def _key_prefix(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 64 or not value.isprintable() or " " in value:
        raise ConfigError(
            f"{name} must be 1 to 64 printable characters without spaces, got {raw!r}"
        )
    return value


#: The shortest SESSION_SECRET Redis mode accepts.
MIN_SECRET_LENGTH = 32


#: The shortest METRICS_TOKEN accepted: a bearer secret anyone on the network may guess at.
MIN_METRICS_TOKEN_LENGTH = 16


def _metrics_token(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    # Sent in an Authorization header: printable ASCII without spaces.
    if len(value) < MIN_METRICS_TOKEN_LENGTH or not all("!" <= c <= "~" for c in value):
        raise ConfigError(
            f"{name} must be at least {MIN_METRICS_TOKEN_LENGTH} printable "
            "ASCII characters without spaces (or empty to turn the token off)"
        )
    return value


def _setting(
    env: str, default: str, parse: Callable[[str, str], Any], *, secret: bool = False
) -> Any:
    # A secret is kept out of repr(): settings objects may be logged or shown in a debugger.
    return field(repr=not secret, metadata={"env": env, "default": default, "parse": parse})


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one MemberSense process.

    Field names are the lower-cased environment variable names; durations
    keep the original design's milliseconds.
    """

    port: int = _setting("PORT", "8080", _port)
    max_concurrent_users: int = _setting("MAX_CONCURRENT_USERS", "100", _integer(1))
    allowed_origins: tuple[str, ...] = _setting("ALLOWED_ORIGINS", "*", _origins)
    rate_limit_window: int = _setting("RATE_LIMIT_WINDOW", "60000", _whole_seconds_ms)
    rate_limit_max_requests: int = _setting("RATE_LIMIT_MAX_REQUESTS", "100", _integer(1))
    rate_limit_storage_uri: str = _setting("RATE_LIMIT_STORAGE_URI", "memory://", _storage_uri)
    session_timeout: int = _setting("SESSION_TIMEOUT", "1800000", _integer(1, "milliseconds"))
    cleanup_interval: int = _setting("CLEANUP_INTERVAL", "300000", _integer(1, "milliseconds"))
    trusted_proxies: int = _setting("TRUSTED_PROXIES", "0", _integer(0))
    max_content_length: int = _setting("MAX_CONTENT_LENGTH", "65536", _integer(1, "bytes"))
    log_level: str = _setting("LOG_LEVEL", "INFO", _choice(LOG_LEVELS, upper=True))
    log_format: str = _setting("LOG_FORMAT", "json", _choice(LOG_FORMATS, upper=False))
    discord_api_base: str = _setting(
        "DISCORD_API_BASE", "https://discord.com/api/v10", _url(("http", "https"))
    )
    discord_gateway_url: str = _setting(
        "DISCORD_GATEWAY_URL", "", _url(("ws", "wss"), optional=True)
    )
    discord_timeout: int = _setting("DISCORD_TIMEOUT", "10000", _integer(1, "milliseconds"))
    login_timeout: int = _setting("LOGIN_TIMEOUT", "30000", _integer(1, "milliseconds"))
    discord_invalid_request_limit: int = _setting(
        "DISCORD_INVALID_REQUEST_LIMIT", "5000", _integer(1)
    )
    threads: int = _setting("THREADS", "32", _integer(1))
    connection_linger: int = _setting("CONNECTION_LINGER", "60000", _integer(0, "milliseconds"))
    max_sessions_per_token: int = _setting("MAX_SESSIONS_PER_TOKEN", "10", _integer(1))
    max_sessions_per_ip: int = _setting("MAX_SESSIONS_PER_IP", "10", _integer(1))
    event_buffer_size: int = _setting("EVENT_BUFFER_SIZE", "1000", _integer(1))
    redis_url: str = _setting("REDIS_URL", "", _redis_url)
    session_secret: str = _setting("SESSION_SECRET", "", _secret, secret=True)
    redis_key_prefix: str = _setting("REDIS_KEY_PREFIX", "membersense:", _key_prefix)
    web_concurrency: int | None = _setting("WEB_CONCURRENCY", "", _optional_integer(1))
    bot_lease_time: int = _setting("BOT_LEASE_TIME", "12000", _integer(3000, "milliseconds"))
    discord_cdn_base: str = _setting(
        "DISCORD_CDN_BASE", "https://cdn.discordapp.com", _url(("http", "https"))
    )
    event_stream_max_seconds: int = _setting(
        "EVENT_STREAM_MAX_SECONDS", "270", _integer(1, "seconds")
    )
    max_event_streams: int = _setting("MAX_EVENT_STREAMS", "16", _integer(0))
    webhook_allow_private: bool = _setting("WEBHOOK_ALLOW_PRIVATE", "0", _flag)
    webhook_timeout: int = _setting("WEBHOOK_TIMEOUT", "5000", _integer(1, "milliseconds"))
    webhook_max_attempts: int = _setting("WEBHOOK_MAX_ATTEMPTS", "5", _integer(1))
    webhook_disable_after: int = _setting("WEBHOOK_DISABLE_AFTER", "5", _integer(1))
    max_webhooks_per_session: int = _setting("MAX_WEBHOOKS_PER_SESSION", "5", _integer(1))
    metrics_token: str = _setting("METRICS_TOKEN", "", _metrics_token, secret=True)
    metrics_public: bool = _setting("METRICS_PUBLIC", "0", _flag)
    request_header_timeout: int = _setting(
        "REQUEST_HEADER_TIMEOUT", "5000", _integer(1, "milliseconds")
    )
    request_body_min_rate: int = _setting(
        "REQUEST_BODY_MIN_RATE", "500", _integer(1, "bytes per second")
    )
    max_connections_per_ip: int = _setting("MAX_CONNECTIONS_PER_IP", "50", _integer(0))
    max_concurrent_history_reads: int | None = _setting(
        "MAX_CONCURRENT_HISTORY_READS", "", _optional_integer(1)
    )
    max_concurrent_logins: int | None = _setting("MAX_CONCURRENT_LOGINS", "", _optional_integer(1))
    max_concurrent_sends: int | None = _setting("MAX_CONCURRENT_SENDS", "", _optional_integer(1))

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Map each environment variable name to its field name."""
        return {f.metadata["env"]: f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build settings from a mapping keyed by environment variable name.

        Missing names take their defaults; values may be strings (as in the
        environment) or already-typed values, which are validated the same way.
        """
        parsed: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            env = f.metadata["env"]
            raw = values.get(env)
            if raw is None:
                raw = f.metadata["default"]
            elif isinstance(raw, (list, tuple)):
                raw = ",".join(raw)
            parsed[f.name] = f.metadata["parse"](env, str(raw))
        settings = cls(**parsed)
        if settings.redis_url and len(settings.session_secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters in Redis mode "
                "(REDIS_URL is set): it encrypts the bot tokens kept in Redis"
            )
        return settings

    @property
    def redis_mode(self) -> bool:
        """True when sessions and bot state live in Redis (REDIS_URL is set)."""
        return bool(self.redis_url)

    @property
    def rate_limit_storage(self) -> str:
        """Where rate-limit windows live: RATE_LIMIT_STORAGE_URI, or Redis in Redis mode."""
        if self.redis_mode and self.rate_limit_storage_uri == "memory://":
            # limits names redis-py's unix:// scheme redis+unix://.
            if self.redis_url.startswith("unix://"):
                return "redis+unix://" + self.redis_url.removeprefix("unix://")
            return self.redis_url
        return self.rate_limit_storage_uri

    @property
    def bot_lease_time_s(self) -> float:
        """How long a process owns a bot's gateway connection without renewing, in seconds."""
        return self.bot_lease_time / 1000

    @property
    def session_timeout_s(self) -> float:
        """Idle time after which a session expires, in seconds."""
        return self.session_timeout / 1000

    @property
    def cleanup_interval_s(self) -> float:
        """Period of the idle-session sweep, in seconds."""
        return self.cleanup_interval / 1000

    @property
    def discord_timeout_s(self) -> float:
        """Bound on one Discord call made for a request, in seconds."""
        return self.discord_timeout / 1000

    @property
    def connection_linger_s(self) -> float:
        """How long a bot stays connected after its last session ended, in seconds."""
        return self.connection_linger / 1000

    @property
    def pending_timeout_s(self) -> float:
        """How long a session may stay pending (its login under way) before it expires: the
        login's own bound and a margin, should the process die mid-login."""
        return self.login_timeout_s + 30.0

    @property
    def metrics_enabled(self) -> bool:
        """Whether ``GET /metrics`` is served (bearer-protected with a token, else public)."""
        return bool(self.metrics_token) or self.metrics_public

    @property
    def login_timeout_s(self) -> float:
        """Bound on a login (token check, gateway READY, member chunking), in seconds."""
        return self.login_timeout / 1000

    @property
    def event_stream_cap(self) -> int:
        """Event streams and waiting long-polls one process serves at once: at most
        ``MAX_EVENT_STREAMS``, and never more than half of ``THREADS``, so the other half
        always serves health checks and reads."""
        return min(self.max_event_streams, self.threads // 2)

    @property
    def webhook_timeout_s(self) -> float:
        """Bound on one webhook delivery attempt, in seconds."""
        return self.webhook_timeout / 1000

    @property
    def request_header_timeout_s(self) -> float:
        """Time a client has to send a request's head, in seconds."""
        return self.request_header_timeout / 1000

    @property
    def history_reads_share(self) -> int:
        """Threads message-history reads may hold at once (default: an eighth of THREADS)."""
        return self.max_concurrent_history_reads or max(1, self.threads // 8)

    @property
    def logins_share(self) -> int:
        """Threads logins may hold at once (default: an eighth of THREADS)."""
        return self.max_concurrent_logins or max(1, self.threads // 8)

    @property
    def sends_share(self) -> int:
        """Threads sending, editing or deleting messages may hold at once (default: an eighth
        of THREADS)."""
        return self.max_concurrent_sends or max(1, self.threads // 8)


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    dotenv: bool = True,
) -> Settings:
    """Read and validate the settings.

    With no *environ*, the process environment is used, seeded first from a
    ``.env`` file in the working directory when *dotenv* is true (variables
    already set are never overridden). *overrides* (keyed by environment name)
    win over both; the app factory's ``test_config`` uses them.
    """
    if environ is None:
        if dotenv:
            from dotenv import load_dotenv

            load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
        environ = os.environ
    names = Settings.env_names()
    values: dict[str, Any] = {k: v for k, v in environ.items() if k in names}
    if overrides:
        values.update({k: v for k, v in overrides.items() if k in names})
    return Settings.from_mapping(values)
