"""Logging: one line per event on stdout, where Heroku's log router reads it."""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit, urlunsplit


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    # No timestamp: Heroku's router stamps every line it collects.
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # The websockets library logs each handshake failure at INFO; a port scanner
    # or a load balancer probe would fill the log.
    quiet = max(logging.WARNING, logging.getLevelName(level))
    logging.getLogger("websockets").setLevel(quiet)


def mask_url(url: str) -> str:
    """The URL with its password replaced, safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
