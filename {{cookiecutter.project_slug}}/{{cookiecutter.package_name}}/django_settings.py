"""Django's settings: only what serving plain HTTP and static files needs.

The app's own settings (port, Redis, WebSocket limits) live in ``settings.py``; this
module holds what Django itself asks for. There is no database, and no channel
layer: the app's broker carries the fan-out between processes.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import warnings
from collections.abc import MutableMapping
from pathlib import Path
from typing import NoReturn

from .web import CONTENT_TYPES, NO_STORE

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent


def _refuse(line: str) -> NoReturn:
    """Stop with one line, as ``settings.load`` does for the app's settings."""
    print(f"error: {line}", file=sys.stderr)
    raise SystemExit(2)


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw not in ("1", "true", "yes", "on"):
        _refuse(f"{name}={raw!r} is not allowed: true or false")
    return True


def _strong(key: str) -> bool:
    """Django's own rule for a production key (check security.W009)."""
    return (
        len(key) >= 50 and len(set(key)) >= 5 and not key.startswith("django-insecure")
    )


# Heroku sets DYNO on every dyno (web, worker, one-off, release): there the app is
# in production, whatever DEBUG says. Builds, laptops and test runs have no DYNO.
ON_HEROKU = "DYNO" in os.environ

# DJANGO_DEBUG=true shows Django's error pages, with settings and tracebacks, to
# anyone: for a laptop only.
DEBUG = _flag("DJANGO_DEBUG")

# On a dyno the key must be a real secret: the app refuses to start without one.
# Elsewhere a missing key is replaced by a random one for this process, so that
# `python -m ...` and the tests work out of the box; nothing here outlives a
# process (no sessions, no stored signatures), so a per-process key loses nothing.
SECRET_KEY = os.environ.get("SECRET_KEY", "").strip()
if ON_HEROKU and not _strong(SECRET_KEY):
    _refuse(
        "SECRET_KEY is missing or weak: on Heroku it must be a random string of at "
        "least 50 characters, e.g. heroku config:set SECRET_KEY=$(python -c "
        "'import secrets; print(secrets.token_urlsafe(50))')"
    )
if not SECRET_KEY:
    SECRET_KEY = secrets.token_urlsafe(50)
    logging.getLogger(__name__).warning(
        "SECRET_KEY is unset: using a random key for this process (set one on Heroku)"
    )

# Heroku's router delivers a request to this app only when its Host is one of the
# app's domains, so any *.herokuapp.com name that arrives here is the app's own.
# Custom domains are added with ALLOWED_HOSTS (comma-separated); localhost and
# 127.0.0.1 serve local runs and the tests. WebSockets do not use this list: the
# app's Origin rule (WS_ALLOWED_ORIGINS) admits them.
ALLOWED_HOSTS = [".herokuapp.com", "localhost", "127.0.0.1", "[::1]"]
_custom_hosts = os.environ.get("ALLOWED_HOSTS", "").split(",")
ALLOWED_HOSTS += [host.strip() for host in _custom_hosts if host.strip()]

INSTALLED_APPS = ["channels", "django.contrib.staticfiles"]

MIDDLEWARE = [
    # Security headers (nosniff, referrer policy) on every answer.
    "django.middleware.security.SecurityMiddleware",
    # Right after SecurityMiddleware, as WhiteNoise asks: /static/ never reaches
    # the views.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Checks Host against ALLOWED_HOSTS (400 otherwise).
    "django.middleware.common.CommonMiddleware",
]

# The plain-HTTP views (/, /healthz) and the ASGI application are in the server
# module, the only one that knows the framework.
ROOT_URLCONF = "{{ cookiecutter.package_name }}.server"
ASGI_APPLICATION = "{{ cookiecutter.package_name }}.server.application"

# No database: rooms live in the broker, and nothing is stored.
DATABASES: dict[str, dict[str, str]] = {}

# No CHANNEL_LAYERS: the app's own broker carries the fan-out (broker.py, node.py),
# one Redis subscription per room and process, each message handed to the members'
# sinks in memory, without a channel layer's queue and task per member and message.

# Logging is the app's (logs.configure: one line per event on stdout); Django must
# not install its own handlers.
LOGGING_CONFIG = None

# Nothing to translate: the only text for people is the demo page.
USE_I18N = False

# Static files: WhiteNoise answers /static/ before any view. It finds the files in
# the package's static/ directory through Django's finders (WHITENOISE_USE_FINDERS),
# so the app needs no collectstatic run (the tests start it directly). Heroku's
# build runs `manage.py collectstatic` anyway, because manage.py exists: it copies
# the same files to STATIC_ROOT (gitignored).
STATIC_URL = "static/"
STATIC_DIR = PACKAGE_DIR / "static"
# The demo page is optional: without it there is nothing to collect.
STATICFILES_DIRS = [STATIC_DIR] if STATIC_DIR.is_dir() else []
STATIC_ROOT = PROJECT_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True


def _headers_of_every_variant(
    headers: MutableMapping[str, str], path: str, url: str
) -> None:
    """The Content-Type and Cache-Control that every variant sends for a static
    file (web.py), instead of WhiteNoise's quoted charset and 60 s of caching."""
    suffix = Path(path).suffix
    if suffix in CONTENT_TYPES:
        headers["Content-Type"] = CONTENT_TYPES[suffix]
    headers[NO_STORE[0]] = NO_STORE[1]


WHITENOISE_ADD_HEADERS_FUNCTION = _headers_of_every_variant
# Before collectstatic has run, STATIC_ROOT does not exist, which is expected here.
warnings.filterwarnings("ignore", "No directory at", UserWarning)
# WhiteNoise hands Django a file iterator that is not async, so under ASGI Django
# reads each file in a thread: fine for the demo's few KiB, and not worth a warning.
warnings.filterwarnings("ignore", "StreamingHttpResponse must consume synchronous")
