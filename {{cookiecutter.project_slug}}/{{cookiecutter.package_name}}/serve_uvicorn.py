"""Run an ASGI app on uvicorn with Heroku's numbers (the fastapi and django variants).

Every option is set here, from the settings, rather than on the Procfile line, so
each carries its reason and a bad setting stops the app before it binds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.protocol import State

from .logs import configure
from .settings import Settings
from .sink import FrameSink

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
# uvicorn 0.54 logs as errors what is none: a denial response (403, 503) ends the
# handshake "without completing" it (its pull request #3138), and a client's
# invalid UTF-8 comes with a traceback though it is answered with 1007. Each
# WebSocket also gets two INFO lines of its own; the app logs its events itself.
QUIET = {
    "ASGI callable returned without completing handshake.",
    "Invalid UTF-8 sequence received from client.",
    '%s - "WebSocket %s" [accepted]',
    '%s - "WebSocket %s" %d',
    '%s - "WebSocket %s" 403',
    "connection open",
    "connection closed",
}


# A connection must send its first request head within this (the websockets
# library's handshake timeout): uvicorn arms no timer before a first request, so a
# client that opens TCP and stalls (slowloris) would hold a descriptor for ever.
REQUEST_HEAD_TIMEOUT = 10


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing a connection whose first request head is
    not complete REQUEST_HEAD_TIMEOUT after it opened."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(
            REQUEST_HEAD_TIMEOUT, transport.close
        )

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


def configure_logging(settings: Settings) -> None:
    """The app's logging, in every process: uvicorn's worker processes import the
    server module afresh and never run its main()."""
    configure(settings.log_level)
    logging.getLogger("uvicorn.error").addFilter(lambda record: record.msg not in QUIET)


def frame_sink(
    send: Callable, close: Callable[[int, str], Awaitable[object]]
) -> FrameSink:
    """The outbound side of the WebSocket behind an ASGI ``send``, writing each
    frame synchronously, as uvicorn's own send does once it is past its flow
    control (which WS_MAX_PENDING_BYTES replaces): no writer task per connection,
    and fan-out is one call per member. ``send`` is a method of uvicorn's
    websockets-sansio protocol object (uvicorn is pinned), whose ``conn`` frames
    the message (compressed when negotiated) and whose transport carries it."""
    protocol = send.__self__
    conn, transport = protocol.conn, protocol.transport

    def write_text(data: bytes) -> None:
        if conn.state is State.OPEN:  # not once a close frame went either way
            conn.send_text(data)
            transport.write(b"".join(conn.data_to_send()))

    return FrameSink(write_text, transport, close)


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
    # After its graceful shutdown uvicorn raises SIGTERM again for the handler it
    # replaced: exit 0 there, as an app that stopped cleanly should, instead of
    # dying by the signal (status 143).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(
        app,
        host=HOST,
        port=settings.port,
        workers=processes,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        http=HeadTimeoutProtocol,
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
        # The app's own logging setup (configure_logging) stays in force.
        log_config=None,
        log_level=settings.log_level.lower(),
    )
