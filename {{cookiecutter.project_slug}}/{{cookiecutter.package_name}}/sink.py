"""A connection's outbound side: how frames leave without the sender waiting.

The session and the hub hand frames to a ``Sink`` and never wait for a client, so
one slow connection cannot hold up a room's fan-out or the broker's reading. A
server module whose framework writes synchronously (websockets) implements the
protocol itself; aiohttp's frame writer fits a ``FrameSink``; the others wrap
their coroutine send in a ``QueuedSink``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from .broker import Payload

# A close waits this long for the client to take the close frame, then the
# connection is dropped: a client that reads nothing cannot hold its file
# descriptor, or a shutdown, any longer. Well inside Heroku's 30 s to SIGKILL.
CLOSE_TIMEOUT = 5


class Sink(Protocol):
    """What a server module provides for one connection."""

    def send(self, payload: Payload) -> None:
        """Queue one text frame; never waits."""

    def pending_bytes(self) -> int:
        """Bytes queued for this connection and not yet taken by the network."""

    def close(self, code: int, reason: str) -> None:
        """Start closing the connection with this code; never waits."""


class BoundedClose:
    """Closing for the sinks below: it starts at once, never waits on the caller,
    and drops the connection if the close has not finished within CLOSE_TIMEOUT
    (a client that reads nothing can hold a close, or a send, forever)."""

    def __init__(
        self,
        close: Callable[[int, str], Awaitable[object]],
        abort: Callable[[], object],
    ) -> None:
        self._close = close
        self._abort = abort
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
                await self._close(code, reason)
        except Exception:  # TimeoutError, or the connection is gone already
            self._abort()

    async def wait_closed(self) -> None:
        """Return once a close that was started has finished or aborted."""
        if self._closing is not None:
            await self._closing


class FrameSink(BoundedClose):
    """A Sink for a framework that can write a whole frame synchronously: each
    frame goes straight into the transport's buffer, as ``websockets.broadcast``
    does. No queue and no writer task: a member costs one call per message."""

    def __init__(
        self,
        write_frame: Callable[[bytes], object],
        transport: asyncio.WriteTransport,
        close: Callable[[int, str], Awaitable[object]],
    ) -> None:
        super().__init__(close, transport.abort)
        self._write_frame = write_frame
        self._transport = transport

    def send(self, payload: Payload) -> None:
        if self._closing is None and not self._transport.is_closing():
            self._write_frame(payload.utf8)

    def pending_bytes(self) -> int:
        return self._transport.get_write_buffer_size()


class QueuedSink(BoundedClose):
    """A Sink for frameworks whose send is a coroutine (ASGI servers, aiohttp with
    compression).

    Frames wait in a queue that one writer task per connection drains in order,
    so fan-out never waits for a client; ``pending_bytes`` counts what waits there
    or is being written. Run ``drain`` as a task beside the receive loop. A close
    does not queue behind the frames: it starts at once.
    """

    def __init__(
        self,
        send_text: Callable[[str], Awaitable[object]],
        close: Callable[[int, str], Awaitable[object]],
        abort: Callable[[], object],
    ) -> None:
        super().__init__(close, abort)
        self._send_text = send_text
        self._queue: deque[Payload] = deque()
        self._pending = 0
        self._wake = asyncio.Event()

    def send(self, payload: Payload) -> None:
        self._queue.append(payload)
        self._pending += len(payload.utf8)
        self._wake.set()

    def pending_bytes(self) -> int:
        return self._pending

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            # What waits is dropped: a slow consumer gets nothing more.
            self._queue.clear()
            self._wake.set()  # the writer ends
        super().close(code, reason)

    async def drain(self) -> None:
        """Write queued frames, in order, until the connection closes."""
        while self._closing is None:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                payload = self._queue.popleft()
                await self._send_text(payload.text)
                self._pending -= len(payload.utf8)
