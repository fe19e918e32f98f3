"""Every setting of the app, read from the environment and checked once, at start.

A bad value stops the app with one line naming the variable, the value and what is
allowed, so a typo in a config var fails the deploy instead of a user's connection.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# The default Redis channel prefix: rooms of different apps sharing one Redis
# never meet.
PROJECT_SLUG = "{{ cookiecutter.project_slug }}"
# Heroku's router closes a connection on which nothing has moved for 55 s (H15/H28).
ROUTER_IDLE_SECONDS = 55.0
ROUTER_CUT = "Heroku's router cuts a connection idle for 55 s"
# HS256 keys: RFC 7518 asks for a key at least as long as the hash (32 bytes).
MIN_SECRET_BYTES = 32
MIN_API_KEY_CHARS = 32
# A room pattern (tokens' rooms and publish claims, AUTH_GUEST_ROOMS): a room name
# in which * stands for any run of characters.
PATTERN_RULE = re.compile(r"[A-Za-z0-9_.:*-]{1,64}")
MAKE_A_KEY = "`openssl rand -hex 32` makes one"


class SettingsError(ValueError):
    """A setting the app refuses to start with; the message is the whole story."""


@dataclass(frozen=True)
class Settings:
    port: int
    redis_url: str | None
    redis_tls_verify: bool
    channel_prefix: str
    ping_interval: float
    ping_timeout: float
    max_message_bytes: int
    # None: only the app's own origin; ("*",): any; else the listed origins.
    allowed_origins: tuple[str, ...] | None
    max_connections: int
    max_rooms: int
    rate_limit: float
    rate_burst: int
    max_pending_bytes: int
    compression: bool
    echo_path: str | None
    log_level: str
    # Heroku sets WEB_CONCURRENCY by dyno size (2 on 512 MB dynos); servers that
    # run several processes use it. The memory broker serves one process only.
    processes: int
    # Identity. The keys that verify connection tokens, AUTH_SECRET first, then
    # AUTH_SECRET_PREVIOUS; never in a repr, so never in a log or a traceback.
    auth_keys: tuple[bytes, ...] = field(repr=False)
    # AUTH_SECRET was unset: the first key is random, good for this process only.
    auth_key_random: bool
    auth_timeout: float
    auth_anonymous: bool
    auth_guest: bool
    auth_guest_rooms: tuple[str, ...]
    auth_guest_ttl: float
    api_key: str | None = field(repr=False)
    max_connections_per_client: int
    # DYNO is set on Heroku: the client address is the last X-Forwarded-For entry,
    # the one Heroku's router appended (the socket's peer is the router).
    behind_router: bool
    # History: the messages kept per room (0: off, plain pub/sub), and for how
    # long after a room's last message.
    history_size: int
    history_ttl: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Reader(os.environ if environ is None else environ)
        secret = env.secret("AUTH_SECRET", MIN_SECRET_BYTES, "bytes")
        previous = env.secret("AUTH_SECRET_PREVIOUS", MIN_SECRET_BYTES, "bytes")
        if previous and not secret:
            raise SettingsError(
                "AUTH_SECRET_PREVIOUS is set without AUTH_SECRET: set the new key "
                "in AUTH_SECRET and the one it replaces in AUTH_SECRET_PREVIOUS"
            )
        # Unset: a random key, which only this process knows (checked at start).
        current = secret.encode() if secret else secrets.token_bytes(MIN_SECRET_BYTES)
        auth_keys = (current,) + ((previous.encode(),) if previous else ())
        return cls(
            port=env.integer("PORT", 8000, low=1, high=65535),
            redis_url=env.redis_url("REDIS_URL"),
            redis_tls_verify=env.boolean("REDIS_TLS_VERIFY", False),
            channel_prefix=env.text("REDIS_CHANNEL_PREFIX", PROJECT_SLUG),
            # Durations are in seconds; decimals are allowed.
            ping_interval=env.number(
                "WS_PING_INTERVAL", 20, below=ROUTER_IDLE_SECONDS, why=ROUTER_CUT
            ),
            # A dead peer is found within interval + timeout, about 40 s.
            ping_timeout=env.number("WS_PING_TIMEOUT", 20),
            # Ample for chat and events; bounds what one frame can cost.
            max_message_bytes=env.integer("WS_MAX_MESSAGE_BYTES", 65536, low=1),
            allowed_origins=env.origins("WS_ALLOWED_ORIGINS"),
            # A dyno has 10,000 file descriptors; the rest serve Redis and logs.
            max_connections=env.integer("WS_MAX_CONNECTIONS", 9000, low=1),
            # Bounds the subscriptions one client can cause.
            max_rooms=env.integer("WS_MAX_ROOMS", 50, low=1),
            # Well above a person typing, a short burst allowed; stops a runaway.
            rate_limit=env.number("WS_RATE_LIMIT", 20),
            rate_burst=env.integer("WS_RATE_BURST", 40, low=1),
            # 1 MiB behind: a slow client is closed before it costs real memory.
            max_pending_bytes=env.integer("WS_MAX_PENDING_BYTES", 1048576, low=1),
            # Off: about 14 KiB per idle connection instead of about 64 KiB.
            compression=env.boolean("WS_COMPRESSION", False),
            echo_path=env.path("WS_ECHO_PATH"),
            log_level=env.choice(
                "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            ),
            # 64: far above any dyno's cores; a typo cannot fork hundreds.
            processes=env.integer("WEB_CONCURRENCY", 1, low=1, high=64),
            auth_keys=auth_keys,
            auth_key_random=secret is None,
            # Long enough for a page to fetch a token on a slow phone network;
            # short enough that a silent socket does not hold a slot for long.
            auth_timeout=env.number("AUTH_TIMEOUT", 10),
            auth_anonymous=env.boolean("AUTH_ANONYMOUS", False),
            auth_guest=env.boolean("AUTH_GUEST", True),
            auth_guest_rooms=env.patterns("AUTH_GUEST_ROOMS", ("*",)),
            # A day: a workshop or a demo session, then a new guest token.
            auth_guest_ttl=env.number("AUTH_GUEST_TTL", 86400),
            api_key=env.secret("API_KEY", MIN_API_KEY_CHARS, "characters"),
            # A school or office behind one NAT fits; one script cannot take the
            # process's WS_MAX_CONNECTIONS.
            max_connections_per_client=env.integer(
                "WS_MAX_CONNECTIONS_PER_CLIENT", 100, low=1
            ),
            behind_router=env.present("DYNO"),
            # 100 frames of a few hundred bytes: a reconnect after a deploy or a
            # short outage is covered; 10,000 bounds what a room can hold.
            history_size=env.integer("HISTORY_SIZE", 100, low=0, high=10000),
            # An hour: a laptop that slept through a meeting still catches up; a
            # quiet room's history then frees its memory (Redis EXPIRE, whole
            # seconds).
            history_ttl=env.integer("HISTORY_TTL", 3600, low=1),
        )


class _Reader:
    """Reads one variable at a time and raises SettingsError naming it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def _refuse(self, name: str, value: str, allowed: str) -> SettingsError:
        return SettingsError(f"{name}={value!r} is not allowed: {allowed}")

    def number(
        self, name: str, default: float, *, below: float | None = None, why: str = ""
    ) -> float:
        raw = self._raw(name)
        if raw is None:
            return float(default)
        allowed = "a number greater than 0"
        if below is not None:
            allowed += f" and less than {below:g}" + (f" ({why})" if why else "")
        try:
            value = float(raw)
        except ValueError:
            raise self._refuse(name, raw, allowed) from None
        # NaN and infinity fail these comparisons too.
        if not (0 < value < (below if below is not None else float("inf"))):
            raise self._refuse(name, raw, allowed)
        return value

    def integer(
        self, name: str, default: int, *, low: int = 0, high: int | None = None
    ) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        allowed = f"a whole number from {low}" + (f" to {high}" if high else " up")
        try:
            value = int(raw)
        except ValueError:
            raise self._refuse(name, raw, allowed) from None
        if value < low or (high is not None and value > high):
            raise self._refuse(name, raw, allowed)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise self._refuse(name, raw, "true or false")

    def present(self, name: str) -> bool:
        return self._raw(name) is not None

    def secret(self, name: str, minimum: int, unit: str) -> str | None:
        """A key: refused when shorter than ``minimum`` (bytes of UTF-8, or
        characters), with its length named and its value never shown."""
        raw = self._raw(name)
        if raw is None:
            return None
        size = len(raw.encode()) if unit == "bytes" else len(raw)
        if size < minimum:
            raise SettingsError(
                f"{name} (not shown, {size} {unit}) is not allowed: at least "
                f"{minimum} {unit}; {MAKE_A_KEY}"
            )
        return raw

    def patterns(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        patterns = tuple(entry.strip() for entry in raw.split(",") if entry.strip())
        if not patterns or not all(PATTERN_RULE.fullmatch(p) for p in patterns):
            raise self._refuse(
                name,
                raw,
                "comma-separated room patterns of 1 to 64 characters among "
                "A-Z a-z 0-9 _ . : - and *, which stands for any run of them",
            )
        return patterns

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.upper() not in allowed:
            raise self._refuse(name, raw, "one of " + ", ".join(allowed))
        return raw.upper()

    def redis_url(self, name: str) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            # The value may hold a password: name only its scheme.
            shown = f"{parts.scheme}://..." if parts.scheme else "(no scheme)"
            raise SettingsError(
                f"{name}={shown!r} is not allowed: a redis:// or rediss:// URL "
                "with a host, or unset for the in-memory broker"
            )
        return raw

    def origins(self, name: str) -> tuple[str, ...] | None:
        raw = self._raw(name)
        if raw is None:
            return None
        entries = (entry.strip().rstrip("/").lower() for entry in raw.split(","))
        origins = tuple(entry for entry in entries if entry)
        for origin in origins:
            if origin != "*" and not urlsplit(origin).netloc:
                raise self._refuse(
                    name,
                    raw,
                    "comma-separated origins such as https://example.com, or *",
                )
        return origins or None

    def path(self, name: str) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return None
        if not raw.startswith("/") or raw in ("/", "/ws", "/healthz"):
            raise self._refuse(
                name, raw, "a path starting with / other than /, /ws and /healthz"
            )
        return raw


def load() -> Settings:
    """The settings a web process serves with, or exit with one line naming the
    refused variable."""
    try:
        settings = Settings.from_env()
        if settings.redis_url is not None and settings.auth_key_random:
            # Each process would make its own key, and refuse the others' tokens.
            raise SettingsError(
                "AUTH_SECRET is not set: with REDIS_URL every process and dyno must "
                f"share one key of at least {MIN_SECRET_BYTES} bytes; {MAKE_A_KEY}"
            )
        return settings
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
