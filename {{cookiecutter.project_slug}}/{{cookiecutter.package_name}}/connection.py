"""One WebSocket connection, from its first frame to its last, whatever the framework.

A server module accepts the upgrade inside ``with slot:`` (admission.py), gives
the connection a ``Sink`` (sink.py), its framework's way out, and runs
``converse`` with a ``receive`` that returns each data frame, text as ``str``
and binary as ``bytes``, and ``None`` (or raises one of ``closed``, the
framework's own exceptions for it) once the connection has closed. Every rule
of the conversation is here: each request gets exactly one reply, a connection
authenticates with a token before anything else (unless AUTH_ANONYMOUS) and is
closed with 4401 when it does not in time or its token expires, a binary frame
closes with 1003, an unexpected error closes this connection alone with 1011.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable

from . import protocol
from .broker import BrokerUnavailable
from .deadlines import Deadlines
from .node import Node
from .protocol import (
    INTERNAL_ERROR,
    UNAUTHENTICATED,
    UNAUTHORIZED,
    UNSUPPORTED_DATA,
    Payload,
    ProtocolError,
)
from .settings import Settings
from .sink import Sink
from .tokens import LEEWAY, TokenError, User, Verifier

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
        "_verifier",
        "_deadlines",
        "_sink",
        "user",
        "deadline",
        "rooms",
        "_closing",
        "_tokens",
        "_stamp",
    )

    def __init__(
        self,
        node: Node,
        settings: Settings,
        verifier: Verifier,
        deadlines: Deadlines,
        sink: Sink,
    ) -> None:
        self._node = node
        self._settings = settings
        self._verifier = verifier
        self._deadlines = deadlines
        self._sink = sink
        self.user: User | None = None  # from a verified token; None: anonymous
        # The close with 4401, in seconds since the epoch: AUTH_TIMEOUT from now,
        # then the token's expiry.
        self.deadline = float("inf")
        if not settings.auth_anonymous:
            self.deadline = time.time() + settings.auth_timeout
            deadlines.watch(self)
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
        replay: list[Payload] = []
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
        if isinstance(reply, tuple):  # joined, then the messages the join asked for
            reply, replay = reply
        self._write(reply)
        for payload in replay:  # before any live message: no await in between
            self.deliver(payload)
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

    async def _perform(
        self, request: protocol.Request
    ) -> str | tuple[str, list[Payload]]:
        ref, kind = request.ref, request.type
        if kind == "ping":
            return protocol.pong(ref)
        if kind == "auth":
            return self._authenticate(request)
        user = self.user
        if user is None and (kind == "refresh" or not self._settings.auth_anonymous):
            raise ProtocolError(*UNAUTHENTICATED, ref)
        if kind == "refresh":
            assert user is not None
            return self._refresh(user, request)
        room = request.room
        assert room is not None  # the parser gives every other request a room
        try:
            if kind == "publish":
                if user is not None and not user.may_publish(room):
                    raise _forbidden("publishing to", room, ref)
                sender = None if user is None else user.public()
                text = protocol.publish_text(room, request.data, sender, ref)
                await self._node.publish(room, text)
                return protocol.published(room, ref)
            if kind == "join":
                return await self._join(request, room, user)
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

    async def _join(
        self, request: protocol.Request, room: str, user: User | None
    ) -> tuple[str, list[Payload]]:
        ref = request.ref
        if user is not None and not user.may_join(room):
            raise _forbidden("joining", room, ref)
        if not self._settings.history_size and (
            request.history is not None or request.since is not None
        ):
            raise ProtocolError(
                "invalid_message",
                "history is off on this app (HISTORY_SIZE=0): join without "
                "history or since",
                ref,
            )
        member = room in self.rooms
        if not member and len(self.rooms) >= self._settings.max_rooms:
            limit = self._settings.max_rooms
            raise ProtocolError(
                "too_many_rooms", f"a connection may join at most {limit} rooms", ref
            )
        # One string per room name in the process, not one per member.
        room = sys.intern(room)
        joined = await self._node.join(
            self, room, since=request.since, last=request.history or 0
        )
        if not member:
            self.rooms.append(room)
        reply = protocol.joined(room, ref, joined.position, joined.recovered)
        return reply, joined.replay

    # ------------------------------------------------------------------- identity

    def _authenticate(self, request: protocol.Request) -> str:
        if self.user is not None:
            raise ProtocolError(
                "invalid_message",
                "already authenticated: send refresh with a new token",
                request.ref,
            )
        user = self._verify(request)
        self._become(user)
        return protocol.authed(user.public(), user.expires_in(), request.ref)

    def _refresh(self, user: User, request: protocol.Request) -> str:
        renewed = self._verify(request)
        if renewed.id != user.id:
            raise ProtocolError(
                "invalid_token",
                "the token is for another user (sub): reconnect to change users",
                request.ref,
            )
        self._become(renewed)  # its name and rooms apply from the next request
        return protocol.refreshed(renewed.expires_in(), request.ref)

    def _verify(self, request: protocol.Request) -> User:
        assert request.token is not None  # the parser checked it is there
        try:
            return self._verifier.verify(request.token)
        except TokenError as error:
            raise ProtocolError("invalid_token", str(error), request.ref) from None

    def _become(self, user: User) -> None:
        self.user = user
        # A token is good until exp plus the leeway every check allows.
        self.deadline = user.expires + LEEWAY
        self._deadlines.watch(self)

    def expire(self) -> None:
        """The deadline has passed (Deadlines calls it): close with 4401."""
        if not self._closing:
            self._closing = True
            reason = (
                "authentication timed out" if self.user is None else "token expired"
            )
            self._sink.close(UNAUTHORIZED, reason)

    # ------------------------------------------------------------------ delivery

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
        self._deadlines.forget(self)
        while self.rooms:
            await self._node.leave(self, self.rooms.pop())


def _forbidden(doing: str, room: str, ref: str | None) -> ProtocolError:
    return ProtocolError(
        "forbidden", f"your token does not allow {doing} the room {room}", ref
    )


async def echo(receive: Receive, send: Send, closed: Closed = ()) -> None:
    """Every frame back as it came: WS_ECHO_PATH, for conformance tests only."""
    try:
        while (frame := await receive()) is not None:
            await send(frame)
    except closed:
        pass
