"""Run an ASGI app on uvicorn with Heroku's numbers (the fastapi and django variants).

Every option is set here, from the settings, rather than on the Procfile line, so
each carries its reason and a bad setting stops the app before it binds.
"""

from __future__ import annotations

import logging

import uvicorn

from .settings import Settings

log = logging.getLogger(__name__)

# Heroku's router reaches the dyno on IPv4; 0.0.0.0 is every interface (uvicorn's
# default, 127.0.0.1, would fail the boot with R10).
HOST = "0.0.0.0"
# The router keeps idle connections to a dyno open for 90 s: closing them sooner
# (uvicorn's default is 5 s) races the router's next request on that connection.
KEEP_ALIVE = 95
# On SIGTERM uvicorn closes every WebSocket with 1012 and waits this long for the
# handlers; well inside the 30 s before Heroku's SIGKILL.
GRACEFUL_SHUTDOWN = 20


def run(app: str, settings: Settings) -> None:
    """Serve ``app`` (an import string, so that several processes can load it)."""
    processes = settings.processes
    if settings.redis_url is None and processes > 1:
        log.warning(
            "WEB_CONCURRENCY=%d ignored: the memory broker is one process; "
            "set REDIS_URL to run several",
            processes,
        )
        processes = 1
    uvicorn.run(
        app,
        host=HOST,
        port=settings.port,
        workers=processes,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        # The websockets-based implementation: it supports the denial responses
        # (403, 503) that the handshake rules need.
        ws="websockets-sansio",
        # Pings keep Heroku's router from cutting an idle connection (55 s) and
        # find dead peers.
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        ws_max_size=settings.max_message_bytes,
        # Off by default: about 14 KiB per idle connection instead of 64 KiB.
        ws_per_message_deflate=settings.compression,
        # Heroku's router logs every request already.
        access_log=False,
        # The app's own logging setup (logs.configure) stays in force.
        log_config=None,
        log_level=settings.log_level.lower(),
    )
