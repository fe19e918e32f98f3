"""A Sink for frameworks whose send is a coroutine (sink.py has the others)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from .protocol import Payload
from .sink import BoundedClose

log = logging.getLogger(__name__)


class QueuedSink(BoundedClose):
    """A Sink for a framework whose send is a coroutine. Frames wait in a queue
    that this sink's writer task drains in order; ``pending_bytes`` counts what
    waits there or is being written. A close does not queue behind the frames:
    it starts at once, and what waits is dropped."""

    __slots__ = ("_queue", "_pending", "_wake", "_writer")

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[Payload] = deque()
        self._pending = 0
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._drain())

    def send(self, payload: Payload) -> None:
        if self._closing is None:
            self._queue.append(payload)
            self._pending += len(payload.utf8)
            self._wake.set()

    def pending_bytes(self) -> int:
        return self._pending

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._queue.clear()  # a slow consumer gets nothing more
            self._wake.set()  # the writer ends after the frame it is writing
        super().close(code, reason)

    async def wait_closed(self) -> None:
        await super().wait_closed()
        self._writer.cancel()  # also when the client left without a close

    async def _drain(self) -> None:
        try:
            while self._closing is None:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    payload = self._queue.popleft()
                    await self.send_text(payload.text)
                    self._pending -= len(payload.utf8)
        except Exception as error:  # the client left mid-send: the receive loop
            log.debug("writer stopped: %r", error)  # hears of it too

    async def send_text(self, text: str) -> None:
        """The framework's send of one text frame."""
        raise NotImplementedError
