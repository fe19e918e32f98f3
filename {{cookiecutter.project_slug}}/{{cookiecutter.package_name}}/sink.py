"""A connection's outbound side: how frames leave without the sender waiting.

The connection and the node hand frames to a ``Sink`` and never wait for a
client, so one slow connection cannot hold up a room's fan-out or the broker's
reading. A server module subclasses ``FrameSink`` where its framework can write a whole
frame synchronously: each frame goes straight into the transport's buffer, as
``websockets.broadcast`` does, with no queue and no task, so a member costs one
call per message. Where the framework's send is a coroutine, it subclasses
``QueuedSink`` (queued_sink.py) instead.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .protocol import Payload

log = logging.getLogger(__name__)

# A close waits this long for the client to take the close frame, then the
# connection is dropped: a client that reads nothing cannot hold its file
# descriptor, or a shutdown, any longer. Well inside Heroku's 30 s to SIGKILL.
CLOSE_TIMEOUT = 5


class Sink(Protocol):
    """What the core needs of one connection's way out."""

    @property
    def closing(self) -> bool:
        """A close has started: nothing more is sent."""
        ...

    def send(self, payload: Payload) -> None:
        """Queue one text frame; never waits."""

    def pending_bytes(self) -> int:
        """Bytes queued for this connection and not yet taken by the network."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Start closing the connection with this code; never waits."""

    async def wait_closed(self) -> None:
        """Return once a close that was started has finished or aborted."""


class BoundedClose:
    """Closing for the sinks below: it starts at once, never waits on the caller,
    and drops the connection if the close has not finished within CLOSE_TIMEOUT
    (a client that reads nothing can hold a close, or a send, forever)."""

    __slots__ = ("_closing",)

    def __init__(self) -> None:
        self._closing: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def close(self, code: int, reason: str) -> None:
        if self._closing is not None:
            return  # the client gets the first reason
        self._closing = asyncio.create_task(self._close_within(code, reason))

    async def _close_within(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.close_frame(code, reason)
        except Exception:  # TimeoutError, or the connection is gone already
            self.abort()

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await self._closing

    async def close_frame(self, code: int, reason: str) -> None:
        """The framework's close: send the close frame, wait for the client's."""
        raise NotImplementedError

    def abort(self) -> None:
        """The framework's way to drop the TCP connection at once."""
        raise NotImplementedError


class FrameSink(BoundedClose):
    """A Sink for a framework that writes a whole frame synchronously into
    ``transport``; ``pending_bytes`` is the transport's write buffer, which the
    app bounds with WS_MAX_PENDING_BYTES."""

    __slots__ = ("_transport",)

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        super().__init__()
        self._transport = transport

    def send(self, payload: Payload) -> None:
        if self._closing is None and not self._transport.is_closing():
            self.write_frame(payload.utf8)

    def pending_bytes(self) -> int:
        return self._transport.get_write_buffer_size()

    def abort(self) -> None:
        self._transport.abort()

    def write_frame(self, utf8: bytes) -> None:
        """The framework's synchronous write of one text frame."""
        raise NotImplementedError


_announced: set[str] = set()


def announce(path: str) -> None:
    """Log, once per process, each way out that connections use: a fast path
    on a library's internals, or the public fallback when they are not there."""
    if path not in _announced:
        _announced.add(path)
        log.info("frames to clients: %s", path)
