"""One WebSocket connection, from its first frame to its last, whatever the framework.

A server module accepts the upgrade inside ``with slot:`` (admission.py), gives
the connection a ``Sink`` (sink.py), its framework's way out, and runs
``converse`` with a ``receive`` that returns each data frame, text as ``str``
and binary as ``bytes``, and ``None`` (or raises one of ``closed``, the
framework's own exceptions for it) once the connection has closed. Every rule
of the conversation is here: each request gets exactly one reply, a binary frame
closes with 1003, an unexpected error closes this connection alone with 1011.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable

from . import protocol
from .broker import BrokerUnavailable, Payload
from .node import Node
from .protocol import INTERNAL_ERROR, UNSUPPORTED_DATA, ProtocolError
from .settings import Settings
from .sink import Sink

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[str | bytes | None]]
Send = Callable[[str | bytes], Awaitable[object]]
# The exceptions by which a framework's receive says the connection has closed.
Closed = tuple[type[Exception], ...]

RATE_LIMITED = ("rate_limited", "too many messages: the request was dropped")


class Connection:
    # One per connection, so no per-instance __dict__ (a few hundred bytes each),
    # and the rate limit's token bucket is two fields here, not an object.
    __slots__ = (
        "_node",
        "_settings",
        "_sink",
        "rooms",
        "_closing",
        "_tokens",
        "_stamp",
    )

    def __init__(self, node: Node, settings: Settings, sink: Sink) -> None:
        self._node = node
        self._settings = settings
        self._sink = sink
        # At most WS_MAX_ROOMS (50) names: a list holds one in a quarter of the
        # memory of a set, and a scan of 50 is as quick as a hash at this size.
        self.rooms: list[str] = []
        self._closing = False
        # WS_RATE_LIMIT tokens a second, at most WS_RATE_BURST saved up.
        self._tokens = float(settings.rate_burst)
        self._stamp = time.monotonic()

    async def converse(self, receive: Receive, closed: Closed = ()) -> None:
        """Answer the client's frames until it leaves or the connection closes."""
        try:
            while not self._sink.closing:
                try:
                    frame = await receive()
                except closed:
                    break
                if frame is None:
                    break  # also when the framework closed it: 1007, 1009, no Pong
                if isinstance(frame, bytes):
                    self._sink.close(UNSUPPORTED_DATA, "binary frames are not accepted")
                    break
                await self.handle(frame)
        except Exception:
            log.exception("connection failed; closing it with 1011")
            self.fail()
        finally:
            await self.end()
            await self._sink.wait_closed()

    async def handle(self, text: str) -> None:
        """Answer one client frame with exactly one reply."""
        allowed = self._take_token()
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

    def _take_token(self) -> bool:
        now = time.monotonic()
        refill = (now - self._stamp) * self._settings.rate_limit
        self._tokens = min(self._settings.rate_burst, self._tokens + refill)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _perform(self, request: protocol.Request) -> str:
        ref = request.ref
        if request.type == "ping":
            return protocol.pong(ref)
        room = request.room
        assert room is not None  # the parser gives every other request a room
        try:
            if request.type == "publish":
                assert request.text is not None
                await self._node.publish(room, request.text)
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
                    await self._node.join(self, room)
                    self.rooms.append(room)
                return protocol.joined(room, ref)
            # leave
            if room in self.rooms:
                self.rooms.remove(room)
                await self._node.leave(self, room)
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

    def fail(self) -> None:
        self._closing = True
        self._sink.close(INTERNAL_ERROR, "unexpected server error")

    def _write(self, text: str) -> None:
        self.deliver(Payload(text, text.encode()))

    async def end(self) -> None:
        """The connection is gone: leave every room."""
        self._closing = True
        while self.rooms:
            await self._node.leave(self, self.rooms.pop())


async def echo(receive: Receive, send: Send, closed: Closed = ()) -> None:
    """Every frame back as it came: WS_ECHO_PATH, for conformance tests only."""
    try:
        while (frame := await receive()) is not None:
            await send(frame)
    except closed:
        pass
