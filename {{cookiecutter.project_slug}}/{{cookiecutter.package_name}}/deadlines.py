"""The process's 4401 deadlines: when each connection must have authenticated, or
its token expires.

One task checks every watched connection each TICK seconds, instead of a timer
per connection: a ``TimerHandle`` with its callback, arguments and context costs
about 300 bytes, and 9,000 connections would hold 9,000 of them. A check of all
9,000 takes well under a millisecond; the task sleeps when nothing is watched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

# The contract closes an expired connection within 1 s after exp plus the leeway:
# a check every half second is late by half a second at most.
TICK = 0.5


class Expiring(Protocol):
    @property
    def deadline(self) -> float:
        """When it must be closed, in seconds since the epoch."""
        ...

    def expire(self) -> None:
        """Close it with 4401: its deadline has passed."""


class Deadlines:
    def __init__(self) -> None:
        self._watched: set[Expiring] = set()
        self._checker: asyncio.Task[None] | None = None

    def watch(self, item: Expiring) -> None:
        """Check ``item.deadline`` from now on (a second call does nothing)."""
        self._watched.add(item)
        if self._checker is None:
            self._checker = asyncio.create_task(self._check())

    def forget(self, item: Expiring) -> None:
        self._watched.discard(item)

    async def _check(self) -> None:
        try:
            while self._watched:
                await asyncio.sleep(TICK)
                now = time.time()
                for item in [item for item in self._watched if item.deadline <= now]:
                    self._watched.discard(item)
                    item.expire()
        finally:
            self._checker = None
