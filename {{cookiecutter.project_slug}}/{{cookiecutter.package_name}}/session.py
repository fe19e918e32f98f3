"""One WebSocket connection as the protocol sees it, whatever the framework.

The server module feeds each client text frame to ``handle`` and gives the session
a ``Sink`` (sink.py), the framework's way to queue a frame without waiting. Every
request gets exactly one reply; messages from the hub go through ``deliver``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from . import protocol
from .broker import BrokerUnavailable, Payload
from .hub import Hub
from .protocol import ProtocolError
from .settings import Settings
from .sink import Sink

RATE_LIMITED = ("rate_limited", "too many messages: the request was dropped")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Session:
    # One per connection: no per-instance __dict__ (a few hundred bytes each).
    __slots__ = ("_hub", "_settings", "_sink", "_bucket", "rooms", "_closing")

    def __init__(self, hub: Hub, settings: Settings, sink: Sink) -> None:
        self._hub = hub
        self._settings = settings
        self._sink = sink
        self._bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
        # At most WS_MAX_ROOMS (50) names: a list holds one in a quarter of the
        # memory of a set, and a scan of 50 is as quick as a hash at this size.
        self.rooms: list[str] = []
        self._closing = False

    async def handle(self, text: str) -> None:
        """Answer one client frame with exactly one reply."""
        allowed = self._bucket.take()
        try:
            request = protocol.parse(text)
            if allowed:
                reply = await self._perform(request)
            else:
                raise ProtocolError(*RATE_LIMITED, request.ref)
        except ProtocolError as error:
            # A flood of bad frames is still a flood: the bucket speaks first.
            reply = (
                error if allowed else ProtocolError(*RATE_LIMITED, error.ref)
            ).reply()
        self._write(reply)
        if self._sink.pending_bytes():
            # One turn of the event loop before the next frame, so that a queued
            # sink's writer sends what this one queued: a burst of requests is not
            # mistaken for a slow consumer.
            await asyncio.sleep(0)

    async def _perform(self, request: protocol.Request) -> str:
        room, ref = request.room, request.ref
        try:
            if request.type == "ping":
                return protocol.pong(ref)
            if request.type == "publish":
                await self._hub.broker.publish(room, request.text)
                return protocol.published(room, ref)
            if request.type == "join":
                if room not in self.rooms:
                    if len(self.rooms) >= self._settings.max_rooms:
                        limit = self._settings.max_rooms
                        raise ProtocolError(
                            "too_many_rooms",
                            f"a connection may join at most {limit} rooms",
                            ref,
                        )
                    # One string per room name in the process, not one per member.
                    room = sys.intern(room)
                    await self._hub.join(self, room)
                    self.rooms.append(room)
                return protocol.joined(room, ref)
            # leave
            if room in self.rooms:
                self.rooms.remove(room)
                await self._hub.leave(self, room)
            return protocol.left(room, ref)
        except BrokerUnavailable:
            raise ProtocolError(
                "broker_unavailable",
                "the message broker cannot be reached: try again",
                ref,
            ) from None

    def deliver(self, payload: Payload) -> None:
        """A message for one of this connection's rooms; never waits."""
        if self._closing:
            return
        self._sink.send(payload)
        if self._sink.pending_bytes() > self._settings.max_pending_bytes:
            # Past the bound the connection gets nothing more: memory stays bounded
            # and the others never wait for it.
            self._closing = True
            self._sink.close(protocol.TRY_AGAIN_LATER, "slow consumer")

    def notify_gap(self, rooms: list[str]) -> None:
        self._write(protocol.gap(rooms))

    def _write(self, text: str) -> None:
        self.deliver(Payload(text, text.encode()))

    async def end(self) -> None:
        """The connection is gone: leave every room."""
        self._closing = True
        while self.rooms:
            await self._hub.leave(self, self.rooms.pop())
