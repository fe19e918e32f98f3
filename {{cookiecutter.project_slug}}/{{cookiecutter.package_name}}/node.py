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
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import NamedTuple, Protocol

from .broker import make_broker
from .history import Window, position_of
from .protocol import Payload, Position
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


class Joined(NamedTuple):
    """What a join found: the room's position (history on) and whether a join
    with since recovered, then the messages to send after ``joined``."""

    position: Position | None
    recovered: bool | None
    replay: list[Payload]


class _Room:
    """A room with members in this process."""

    __slots__ = ("members", "position", "held", "catch_ups")

    def __init__(self) -> None:
        self.members: set[Member] = set()
        # History on: the latest message given to the members; None until the
        # room's first read.
        self.position: Position | None = None
        # While the subscription heals after an outage: what arrived meanwhile,
        # given to the members once the missed messages are.
        self.held: list[Payload] | None = None
        # Recent reads of the history, for joins with the same question.
        self.catch_ups: dict[tuple[int | None, int], _CatchUp] = {}


class _CatchUp:
    """One read of a room's history and every message that arrived since it was
    sent: together, the room's messages up to now. Joins that ask the same
    (since, or last) within CATCH_UP_SECONDS share it instead of reading Redis
    again: after a deploy every client of a room comes back with the same since
    within a few seconds."""

    __slots__ = ("window", "tail", "expires", "size", "_known", "_indexed")

    def __init__(self) -> None:
        self.window: Window | None = None  # None: the read is in flight
        self.tail: list[Payload] = []
        self.expires = float("inf")
        self.size = 0  # bytes of the messages it holds
        self._known: dict[int, Payload] = {}
        self._indexed = -1  # of the tail; -1: not even the window yet

    def shareable(self, now: float) -> bool:
        return self.expires > now and self.size <= CATCH_UP_BYTES

    def by_offset(self) -> dict[int, Payload]:
        """The window's and the tail's messages of the window's epoch by offset,
        indexed once for every join that shares them (a storm's thousands)."""
        window = self.window
        assert window is not None  # a read's joins share it once it is back
        epoch = window.position.epoch
        if self._indexed < 0:
            self._known = _by_offset(window.payloads, epoch)
            self._indexed = 0
        if self._indexed < len(self.tail):
            self._known.update(_by_offset(self.tail[self._indexed :], epoch))
            self._indexed = len(self.tail)
        return self._known


# A reconnect storm: clients back off for up to a few seconds (0.5 s doubling,
# with jitter) before they come back; a read older than this is not shared.
CATCH_UP_SECONDS = 10.0
# Distinct questions a room's recent reads answer, and the bytes of messages each
# may hold: a storm of chat-sized messages is served from one read, while large
# messages are read again rather than held (at most 8 MiB a room, for 10 s).
MAX_CATCH_UPS = 8
CATCH_UP_BYTES = 1 << 20


class Node:
    def __init__(self, settings: Settings) -> None:
        self._rooms: dict[str, _Room] = {}
        # Per room, so that a first join and a last leave of one room never
        # interleave their SUBSCRIBE and UNSUBSCRIBE, and a join's read of the
        # history never interleaves with another's or with healing.
        self._locks: dict[str, _RoomLock] = {}
        self._history_size = settings.history_size
        self._broker = make_broker(settings, self)
        self._healing: set[asyncio.Task[None]] = set()

    @property
    def broker_kind(self) -> str:
        return self._broker.kind

    @property
    def healthy(self) -> bool:
        return self._broker.healthy

    async def start(self) -> None:
        await self._broker.start()

    async def close(self) -> None:
        for task in self._healing:
            task.cancel()
        await self._broker.close()

    async def join(
        self, member: Member, room: str, since: Position | None = None, last: int = 0
    ) -> Joined:
        """Return once the member will receive every message published to the room
        from now on; with history on, with what it asked for (since, or the last
        messages) to send first. Raises BrokerUnavailable when the room cannot
        be subscribed or its history read."""
        async with self._exclusive(room):
            entry = self._rooms.get(room)
            if entry is None:
                await self._broker.subscribe(room)
                entry = self._rooms[room] = _Room()
            if not self._history_size:
                entry.members.add(member)
                return Joined(None, None, [])
            try:
                joined = await self._catch_up(entry, room, since, last)
            except BaseException:
                if not entry.members:  # the first join failed: nobody is here
                    del self._rooms[room]
                    await self._broker.unsubscribe(room)
                raise
            entry.members.add(member)  # after the await: nothing comes in between
            return joined

    async def leave(self, member: Member, room: str) -> None:
        async with self._exclusive(room):
            entry = self._rooms.get(room)
            if entry is None or member not in entry.members:
                return
            entry.members.discard(member)
            if not entry.members:
                del self._rooms[room]
                await self._broker.unsubscribe(room)

    async def publish(self, room: str, text: str) -> None:
        """Raises BrokerUnavailable when the broker did not take the message."""
        await self._broker.publish(room, text)

    # ------------------------------------------------------------------- history

    async def _catch_up(
        self, entry: _Room, room: str, since: Position | None, last: int
    ) -> Joined:
        position = entry.position
        if position is not None and last == 0:
            if since is None:
                return Joined(position, None, [])
            if since == position:  # nothing missed: no read
                return Joined(position, True, [])
        key = (None if since is None else since.offset, last)
        shared = self._shared(entry, key)
        if shared is None:
            shared = entry.catch_ups[key] = _CatchUp()
            try:
                shared.window = await self._broker.read(room, key[0], last)
            except BaseException:
                entry.catch_ups.pop(key, None)
                raise
            shared.expires = time.monotonic() + CATCH_UP_SECONDS
            shared.size += sum(len(payload.utf8) for payload in shared.window.payloads)
        joined = self._replay(entry, shared, since, last)
        if key == (None, 0) or not shared.shareable(time.monotonic()):
            # A plain join reads only the room's position, once: nothing to share.
            entry.catch_ups.pop(key, None)
        return joined

    def _replay(
        self, entry: _Room, shared: _CatchUp, since: Position | None, last: int
    ) -> Joined:
        """What a join gets from a read and what arrived since it was sent."""
        window = shared.window
        assert window is not None  # a room's reads run one at a time (its lock)
        epoch = window.position.epoch
        known = shared.by_offset()
        fresh: list[Payload] = []
        if entry.position is None:  # the room's first read: live starts after it
            entry.position = position = window.position
            for payload in shared.tail:  # arrived meanwhile, given to nobody yet
                if self._advance(entry, payload):
                    fresh.append(payload)
        else:
            position = entry.position
        # The members have had every message up to here: a replay ends there and
        # live delivery goes on from it.
        top = entry.position.offset if entry.position.epoch == epoch else -1
        if since is not None:
            wanted = range(since.offset + 1, top + 1)
            recovered = (
                since.epoch == epoch
                and 0 <= position.offset - since.offset <= self._history_size
                and all(offset in known for offset in wanted)
            )
            replay = [known[offset] for offset in wanted] if recovered else fresh
            return Joined(position, recovered, replay)
        earlier = [offset for offset in sorted(known) if offset <= position.offset]
        asked = earlier[-last:] if last else []
        return Joined(position, None, [known[offset] for offset in asked] + fresh)

    def _shared(self, entry: _Room, key: tuple[int | None, int]) -> _CatchUp | None:
        """A recent read of the same question, if one is still good to share;
        expired ones go, and a room keeps at most MAX_CATCH_UPS."""
        now = time.monotonic()
        for old in [k for k, c in entry.catch_ups.items() if not c.shareable(now)]:
            del entry.catch_ups[old]
        while len(entry.catch_ups) >= MAX_CATCH_UPS and key not in entry.catch_ups:
            del entry.catch_ups[next(iter(entry.catch_ups))]  # the oldest
        return entry.catch_ups.get(key)

    def _advance(self, entry: _Room, payload: Payload) -> bool:
        """Whether the members should get this message: False for one they have
        had (healing and a join's read can meet a message twice)."""
        found = position_of(payload.text)
        if found is None:
            return True  # a plain PUBLISH: live only, no offset
        current = entry.position
        if (
            current is not None
            and current.epoch == found.epoch
            and found.offset <= current.offset
        ):
            return False
        entry.position = found
        return True

    # ------------------------------------------------------- the broker's callbacks

    def on_message(self, room: str, payload: Payload) -> None:
        entry = self._rooms.get(room)
        if entry is None:
            return
        if entry.catch_ups:
            self._record(entry, payload)
        if entry.held is not None:
            entry.held.append(payload)
            return
        if self._history_size and not self._advance(entry, payload):
            return
        self._deliver(entry.members, payload)

    def _record(self, entry: _Room, payload: Payload) -> None:
        now = time.monotonic()
        for key, shared in list(entry.catch_ups.items()):
            if shared.window is not None and (
                not shared.shareable(now) or len(shared.tail) >= self._history_size
            ):
                del entry.catch_ups[key]  # too old or too big: the next join reads
            else:
                shared.tail.append(payload)
                shared.size += len(payload.utf8)

    def _deliver(self, members: Iterable[Member], payload: Payload) -> None:
        for member in tuple(members):
            try:
                member.deliver(payload)
            except Exception:
                # One member's bug must not end the broker's subscriber task, or
                # every room of the process would go silent: it is closed alone.
                log.exception("delivering to a connection failed; closing it")
                member.fail()

    def on_resubscribed(self, rooms: list[str]) -> None:
        """Redis came back. History off: each member of any of these rooms gets
        one notice listing its rooms, since messages sent meanwhile are lost.
        History on: the missed messages are read from the history first and
        given to the members in order; the notice goes only to rooms where that
        was impossible. Until then the rooms' new messages wait (held)."""
        if not self._history_size:
            self._report_gap(rooms)
            return
        entries = [(room, self._rooms[room]) for room in rooms if room in self._rooms]
        for _, entry in entries:
            entry.held = []
            entry.catch_ups.clear()  # they missed what this outage lost
        task = asyncio.create_task(self._heal(entries))
        self._healing.add(task)
        task.add_done_callback(self._healing.discard)

    async def _heal(self, entries: list[tuple[str, _Room]]) -> None:
        lost: list[str] = []
        for room, entry in entries:
            try:
                async with self._exclusive(room):
                    if not await self._heal_room(room, entry):
                        lost.append(room)
            except Exception as error:  # BrokerUnavailable: Redis went again
                reason = error.__cause__ or error
                log.warning("healing %s from its history failed: %r", room, reason)
                lost.append(room)
            finally:
                held, entry.held = entry.held or [], None
                for payload in held:
                    if self._advance(entry, payload):
                        self._deliver(entry.members, payload)
        if lost:
            self._report_gap(lost)

    async def _heal_room(self, room: str, entry: _Room) -> bool:
        """Give the members what they missed; False when the history cannot."""
        position = entry.position
        if position is None or not entry.members:
            return True
        window = await self._broker.read(room, position.offset, 0)
        top = window.position
        missed = top.offset - position.offset
        if top.epoch != position.epoch or not 0 <= missed <= self._history_size:
            entry.position = top  # a new epoch, or too far behind: start afresh
            return False
        if len(window.payloads) != missed:
            entry.position = top
            return False
        for payload in window.payloads:
            if self._advance(entry, payload):
                self._deliver(entry.members, payload)
        return True

    def _report_gap(self, rooms: list[str]) -> None:
        lost: dict[Member, list[str]] = {}
        for room in rooms:
            entry = self._rooms.get(room)
            for member in entry.members if entry is not None else ():
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


def _by_offset(payloads: list[Payload], epoch: str) -> dict[int, Payload]:
    """The messages of one epoch by their offset (a message read twice counts
    once)."""
    found: dict[int, Payload] = {}
    for payload in payloads:
        position = position_of(payload.text)
        if position is not None and position.epoch == epoch:
            found[position.offset] = payload
    return found
