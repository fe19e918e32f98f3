"""Each room's recent messages, numbered, so a client that was away can catch up.

With HISTORY_SIZE above 0 every message published through the app gets the room's
next ``offset`` (1, 2, 3, ...) and the room's ``epoch``, a random string that
changes whenever the history is lost (Redis restarted without its data, flushed,
or the room quiet for HISTORY_TTL): offsets compare only within one epoch. The
two fields are written into the frame itself, just before its closing brace:

    {"type": "message", "room": "lobby", "data": 1, "offset": 7, "epoch": "9f..."}

``MemoryHistory`` keeps them in this process. On Redis, room R has two keys, both
named with R as a hash tag, so that a Redis Cluster keeps them in one slot:

    <prefix>:{R}:meta      hash: epoch, offset (the latest message's)
    <prefix>:{R}:messages  stream: the last HISTORY_SIZE frames, entry id 0-<offset>

``APPEND`` numbers a frame, stores it and publishes it on R's channel in one
atomic script, so no process sees a message the history lacks, or the reverse.
``READ`` answers the room's epoch and latest offset (starting an epoch if there is
none, so that a first ``joined`` has one too) and the messages asked for.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

from .protocol import Payload, Position

# One Lua script per step: redis-py's register_script runs it by its SHA1
# (EVALSHA) and loads it again after a Redis restart (NOSCRIPT).
APPEND = """
-- KEYS[1] meta, KEYS[2] messages; ARGV: channel, frame, size, ttl, a new epoch
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  -- no history, or it was lost: a new epoch, counting from 1 again
  epoch = ARGV[5]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = string.sub(ARGV[2], 1, -2) ..
  ', "offset": ' .. offset .. ', "epoch": "' .. epoch .. '"}'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '0-' .. offset, 'f', frame)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
-- how many processes received it (the publish helper reports it)
return redis.call('PUBLISH', ARGV[1], frame)
"""
READ = """
-- KEYS[1] meta, KEYS[2] messages; ARGV: a new epoch, ttl, size, mode, n
-- mode since: the messages after offset n; last: the last n; none: none
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'offset'))
local size, n = tonumber(ARGV[3]), tonumber(ARGV[5])
local found = {}
if ARGV[4] == 'since' and n < top and top - n <= size then
  found = redis.call('XRANGE', KEYS[2], '0-' .. (n + 1), '+', 'COUNT', top - n)
elseif ARGV[4] == 'last' and n > 0 then
  found = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', math.min(n, size))
end
return {epoch, top, found}
"""

# The fields' text as APPEND writes it (json.dumps' separators), matched at the
# end of a frame; a frame without them (a plain PUBLISH) is delivered live only.
POSITION = re.compile(r', "offset": ([0-9]{1,18}), "epoch": "([0-9a-f]{1,32})"\}\Z')
# The longest text POSITION matches (18 digits, 32 hex digits and the words):
# only a frame's last bytes are searched, however large the frame.
POSITION_TAIL = 80
# 8 random bytes: two epochs of one room never meet.
EPOCH_BYTES = 8


@dataclass(frozen=True, slots=True)
class Window:
    """What a read of a room's history found."""

    position: Position  # the room's latest message when it was read
    payloads: list[Payload]  # the messages asked for, oldest first


def new_epoch() -> str:
    return secrets.token_hex(EPOCH_BYTES)


def stamp(frame: str, offset: int, epoch: str) -> str:
    """The frame with its offset and epoch, exactly as APPEND writes them."""
    return f'{frame[:-1]}, "offset": {offset}, "epoch": "{epoch}"}}'


def position_of(frame: str) -> Position | None:
    """The offset and epoch a message frame carries; None: it has none."""
    found = POSITION.search(frame, max(0, len(frame) - POSITION_TAIL))
    if found is None:
        return None
    return Position(int(found[1]), found[2])


def keys(prefix: str, room: str) -> list[str]:
    """The room's two Redis keys: meta, messages."""
    tag = "{" + room + "}"  # a hash tag: Redis Cluster hashes only this part
    return [f"{prefix}:{tag}:meta", f"{prefix}:{tag}:messages"]


class _Room:
    __slots__ = ("epoch", "offset", "frames", "expires")

    def __init__(self, size: int, expires: float) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.frames: deque[Payload] = deque(maxlen=size)
        self.expires = expires


class MemoryHistory:
    """The history of the memory broker's rooms, in this process. Each room keeps
    at most ``size`` frames and is dropped ``ttl`` seconds after its last message,
    so memory stays bounded however many rooms come and go."""

    def __init__(self, size: int, ttl: float) -> None:
        self._size = size
        self._ttl = ttl
        # Ordered by expiry: a room moves to the end whenever it is extended.
        self._rooms: OrderedDict[str, _Room] = OrderedDict()

    def append(self, room: str, frame: str) -> Payload:
        entry = self._room(room)
        entry.offset += 1
        text = stamp(frame, entry.offset, entry.epoch)
        payload = Payload(text, text.encode())
        entry.frames.append(payload)
        entry.expires = time.monotonic() + self._ttl
        self._rooms.move_to_end(room)
        return payload

    def read(self, room: str, since: int | None, last: int) -> Window:
        entry = self._room(room)
        frames: list[Payload] = []
        if since is not None and since < entry.offset <= since + self._size:
            frames = list(entry.frames)[since - entry.offset :]
        elif last > 0:
            frames = list(entry.frames)[-last:]
        return Window(Position(entry.offset, entry.epoch), frames)

    def _room(self, room: str) -> _Room:
        now = time.monotonic()
        while self._rooms:  # the expired ones are at the front
            oldest = next(iter(self._rooms.values()))
            if oldest.expires > now:
                break
            self._rooms.popitem(last=False)
        entry = self._rooms.get(room)
        if entry is None:
            entry = self._rooms[room] = _Room(self._size, now + self._ttl)
        return entry

    def __len__(self) -> int:
        """Rooms with history now (tests: memory stays bounded)."""
        return len(self._rooms)


class RedisHistory:
    """The Redis history: APPEND and READ on the app's publishing connections.
    Both raise redis-py's errors (RedisError, OSError): the broker turns them into
    BrokerUnavailable."""

    def __init__(self, client: redis.Redis, prefix: str, size: int, ttl: int) -> None:
        self._prefix = prefix
        self._size = size
        self._ttl = ttl
        self._append = client.register_script(APPEND)
        self._read = client.register_script(READ)

    async def append(self, room: str, frame: str) -> None:
        """Number, keep and publish the frame; raises RedisError when Redis did
        not (unreachable, or refusing writes: out of memory under noeviction)."""
        channel = f"{self._prefix}:{room}"
        args: list[str | int] = [channel, frame, self._size, self._ttl, new_epoch()]
        await self._append(keys(self._prefix, room), args)

    async def read(self, room: str, since: int | None, last: int) -> Window:
        mode, n = ("since", since) if since is not None else ("last", last)
        args: list[str | int] = [new_epoch(), self._ttl, self._size, mode, n]
        answer: Any = await self._read(keys(self._prefix, room), args)
        epoch, top, found = answer
        frames = [fields[1] for _, fields in found]
        if mode == "last":
            frames.reverse()  # XREVRANGE: newest first
        payloads = [Payload(frame.decode(), frame) for frame in frames]
        return Window(Position(int(top), epoch.decode()), payloads)
