"""The rooms of this process: who is a member where, and fan-out to them.

The hub subscribes a room on the broker when its first local member joins and
unsubscribes it when the last one leaves. Messages from the broker are handed to
each member's ``deliver``, which never blocks: one slow connection cannot hold up
the others or the broker's reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from .broker import Payload


class Member(Protocol):
    def deliver(self, payload: Payload) -> None: ...

    def notify_gap(self, rooms: list[str]) -> None: ...


class Broker(Protocol):
    kind: str
    healthy: bool

    async def subscribe(self, room: str) -> None: ...

    async def unsubscribe(self, room: str) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.broker: Broker | None = None  # set by the app once it is built
        self._members: dict[str, set[Member]] = {}
        # Per-room lock, so a first join and a last leave of one room never
        # interleave their SUBSCRIBE and UNSUBSCRIBE; [lock, users].
        self._locks: dict[str, list] = {}

    async def join(self, member: Member, room: str) -> None:
        """Return once the member will receive every message published to the room
        from now on; raises BrokerUnavailable when the room cannot be subscribed."""
        async with self._exclusive(room):
            members = self._members.get(room)
            if members is None:
                await self.broker.subscribe(room)
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
                await self.broker.unsubscribe(room)

    def deliver(self, room: str, payload: Payload) -> None:
        """Called by the broker for each message: hand it to every local member."""
        for member in tuple(self._members.get(room, ())):
            member.deliver(payload)

    def resubscribed(self, rooms: list[str]) -> None:
        """Called by the broker after an outage: each member of any of these rooms
        gets one notice listing its rooms, since messages sent meanwhile are lost."""
        lost: dict[Member, list[str]] = {}
        for room in rooms:
            for member in self._members.get(room, ()):
                lost.setdefault(member, []).append(room)
        for member, member_rooms in lost.items():
            member.notify_gap(sorted(member_rooms))

    @property
    def rooms(self) -> int:
        return len(self._members)

    @asynccontextmanager
    async def _exclusive(self, room: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(room, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[room]
