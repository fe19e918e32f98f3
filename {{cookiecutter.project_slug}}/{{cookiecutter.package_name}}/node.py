"""The node: what stands between this process's connections and the broker.

Connections join, leave and publish through the node, and never see the broker;
the broker calls the node back (``on_message``, ``on_resubscribed``) and never
sees a connection. The node subscribes a room on the broker when its first local
member joins and unsubscribes it when the last one leaves, and hands each message
to every member's ``deliver``, which never blocks: one slow connection cannot hold
up the others or the broker's reading, and one that fails is closed alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from .broker import Payload, make_broker
from .settings import Settings

log = logging.getLogger(__name__)


class Member(Protocol):
    """A connection as the node sees it."""

    def deliver(self, payload: Payload) -> None:
        """A message for one of its rooms; never waits."""

    def notify_gap(self, rooms: list[str]) -> None:
        """Messages to these rooms may have been lost."""

    def fail(self) -> None:
        """Delivering to it raised: close it as an unexpected server error."""


class _RoomLock:
    """A room's lock and how many joins and leaves wait on it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Node:
    def __init__(self, settings: Settings) -> None:
        self._members: dict[str, set[Member]] = {}
        # Per room, so that a first join and a last leave of one room never
        # interleave their SUBSCRIBE and UNSUBSCRIBE.
        self._locks: dict[str, _RoomLock] = {}
        self._broker = make_broker(settings, self)

    @property
    def broker_kind(self) -> str:
        return self._broker.kind

    @property
    def healthy(self) -> bool:
        return self._broker.healthy

    async def start(self) -> None:
        await self._broker.start()

    async def close(self) -> None:
        await self._broker.close()

    async def join(self, member: Member, room: str) -> None:
        """Return once the member will receive every message published to the room
        from now on; raises BrokerUnavailable when the room cannot be subscribed."""
        async with self._exclusive(room):
            members = self._members.get(room)
            if members is None:
                await self._broker.subscribe(room)
                members = self._members[room] = set()
            members.add(member)

    async def leave(self, member: Member, room: str) -> None:
        async with self._exclusive(room):
            members = self._members.get(room)
            if members is None or member not in members:
                return
            members.discard(member)
            if not members:
                del self._members[room]
                await self._broker.unsubscribe(room)

    async def publish(self, room: str, text: str) -> None:
        """Raises BrokerUnavailable when the broker did not take the message."""
        await self._broker.publish(room, text)

    # ------------------------------------------------------- the broker's callbacks

    def on_message(self, room: str, payload: Payload) -> None:
        for member in tuple(self._members.get(room, ())):
            try:
                member.deliver(payload)
            except Exception:
                # One member's bug must not end the broker's subscriber task, or
                # every room of the process would go silent: it is closed alone.
                log.exception("delivering to a connection failed; closing it")
                member.fail()

    def on_resubscribed(self, rooms: list[str]) -> None:
        """Each member of any of these rooms gets one notice listing its rooms,
        since messages sent meanwhile are lost."""
        lost: dict[Member, list[str]] = {}
        for room in rooms:
            for member in self._members.get(room, ()):
                lost.setdefault(member, []).append(room)
        for member, member_rooms in lost.items():
            try:
                member.notify_gap(sorted(member_rooms))
            except Exception:
                log.exception("telling a connection of a gap failed; closing it")
                member.fail()

    @asynccontextmanager
    async def _exclusive(self, room: str) -> AsyncIterator[None]:
        entry = self._locks.get(room)
        if entry is None:
            entry = self._locks[room] = _RoomLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[room]
