"""A connection's outbound side: how frames leave without the sender waiting.

The session and the hub hand frames to a ``Sink`` and never wait for a client, so
one slow connection cannot hold up a room's fan-out or the broker's reading. A
server module whose framework writes synchronously (websockets) implements the
protocol itself; the others wrap their coroutine send in a ``QueuedSink``.
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


class QueuedSink:
    """A Sink for frameworks whose send is a coroutine (ASGI servers, aiohttp).

    Frames wait in a queue that one writer task per connection drains in order,
    so fan-out never waits for a client; ``pending_bytes`` counts what waits there
    or is being written. Run ``drain`` as a task beside the receive loop.

    A close does not queue behind the frames: a client that reads nothing can hold
    a send forever. It starts at once, and ``abort`` drops the connection if the
    close has not finished within CLOSE_TIMEOUT.
    """

    def __init__(
        self,
        send_text: Callable[[str], Awaitable[object]],
        close: Callable[[int, str], Awaitable[object]],
        abort: Callable[[], object],
    ) -> None:
        self._send_text = send_text
        self._close = close
        self._abort = abort
        self._queue: deque[Payload] = deque()
        self._pending = 0
        self._wake = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None

    def send(self, payload: Payload) -> None:
        self._queue.append(payload)
        self._pending += len(payload.utf8)
        self._wake.set()

    def pending_bytes(self) -> int:
        return self._pending

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def close(self, code: int, reason: str) -> None:
        if self._closing is not None:
            return  # the client gets the first reason
        # What waits is dropped: a slow consumer gets nothing more.
        self._queue.clear()
        self._wake.set()  # the writer ends
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

    async def drain(self) -> None:
        """Write queued frames, in order, until the connection closes."""
        while self._closing is None:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                payload = self._queue.popleft()
                await self._send_text(payload.text)
                self._pending -= len(payload.utf8)
