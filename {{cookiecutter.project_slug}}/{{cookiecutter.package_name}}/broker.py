"""Brokers: how a published message reaches every process that has members.

``MemoryBroker`` serves one process (local development and workshops).
``RedisBroker`` shares rooms between every process and dyno through Redis pub/sub:
room R is the channel ``<prefix>:<R>`` and the payload is the exact text of the
``message`` frame, forwarded to members without re-encoding.

With history on (HISTORY_SIZE above 0) a broker publishes each message through
its history (history.py), which numbers it, and ``read`` answers a room's
history.

A broker is built with its ``Listener`` (the node) and calls it back:
``on_message(room, payload)`` for each message and ``on_resubscribed(rooms)``
after Redis came back, so the node can heal or report the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .history import MemoryHistory, RedisHistory, Window
from .logs import mask_url
from .protocol import Payload
from .settings import Settings

log = logging.getLogger(__name__)

# Reconnect backoff: first retry within 0.5 s, doubling, with full jitter so that
# every process of every dyno does not knock at once. Capped at 1.5 s (under the
# contract's 5 s cap) so delivery resumes within 2 s of Redis being back.
RETRY_FIRST = 0.5
RETRY_CAP = 1.5
# The subscriber PINGs Redis this often and gives up on a connection silent for
# longer than interval + grace: a half-open link (no FIN) is found within 7.5 s.
HEALTH_INTERVAL = 5.0
HEALTH_GRACE = 2.5
# How long the subscriber waits for Redis data before it looks at its commands;
# it bounds the time a join waits before its SUBSCRIBE is written.
POLL = 0.05
# A connect, a command or a subscription answer slower than this means Redis is
# unreachable: a client gets broker_unavailable instead of a hung request.
REDIS_TIMEOUT = 2.0
# One subscriber plus at most three publishers: four connections per process, so
# a 20-connection Heroku mini plan serves five processes.
PUBLISH_CONNECTIONS = 3
# Redis closes idle non-subscriber connections after 300 s on Heroku: a pooled
# publisher idle for longer than this is PINGed before it is used again.
PUBLISHER_HEALTH_CHECK = 30


class BrokerUnavailable(Exception):
    """Redis cannot be reached; the request was not done."""


class Listener(Protocol):
    """What a broker calls back: the node."""

    def on_message(self, room: str, payload: Payload) -> None:
        """A message for the room's local members; never waits."""

    def on_resubscribed(self, rooms: list[str]) -> None:
        """These rooms were subscribed again after an outage."""


class Broker(Protocol):
    """Every method the node calls on a broker."""

    @property
    def kind(self) -> str:
        """``memory`` or ``redis``, as /healthz reports it."""
        ...

    @property
    def healthy(self) -> bool:
        """False while Redis cannot be reached."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self, room: str) -> None:
        """Return once a message published from now on reaches this process;
        raise BrokerUnavailable when that cannot be promised."""

    async def unsubscribe(self, room: str) -> None: ...

    async def publish(self, room: str, text: str) -> None:
        """Publish a message frame (numbered, with history on); raise
        BrokerUnavailable if it was not."""

    async def read(self, room: str, since: int | None, last: int) -> Window:
        """History on: the room's position and the messages after offset
        ``since``, or its ``last`` messages; raise BrokerUnavailable when Redis
        cannot answer."""
        ...


class MemoryBroker:
    """Rooms inside this one process."""

    kind = "memory"
    healthy = True

    def __init__(self, settings: Settings, listener: Listener) -> None:
        self._listener = listener
        self._history = (
            MemoryHistory(settings.history_size, settings.history_ttl)
            if settings.history_size
            else None
        )

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def subscribe(self, room: str) -> None:
        pass

    async def unsubscribe(self, room: str) -> None:
        pass

    async def publish(self, room: str, text: str) -> None:
        if self._history is None:
            self._listener.on_message(room, Payload(text, text.encode()))
        else:
            self._listener.on_message(room, self._history.append(room, text))

    async def read(self, room: str, since: int | None, last: int) -> Window:
        assert self._history is not None  # the node reads only with history on
        return self._history.read(room, since, last)


def redis_options(settings: Settings, url: str) -> dict[str, Any]:
    """Connection options for Heroku's Redis: its rediss:// certificates are
    self-signed, so they are not verified unless REDIS_TLS_VERIFY is true. redis-py
    rejects TLS options on redis:// URLs, so they are passed for rediss:// only."""
    options: dict[str, Any] = {"socket_connect_timeout": REDIS_TIMEOUT}
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required" if settings.redis_tls_verify else "none"
    return options


class RedisBroker:
    """Rooms shared by every process through Redis pub/sub.

    One task owns the subscriber connection: joins and leaves reach it through a
    queue, never through a second task on the same connection. It reconnects with
    backoff when the connection drops, resubscribes every room with local members
    and then reports them to the hub, since messages sent meanwhile are lost.
    """

    kind = "redis"

    def __init__(self, settings: Settings, url: str, listener: Listener) -> None:
        self._url = url
        self._prefix = settings.channel_prefix + ":"
        self._listener = listener
        options = redis_options(settings, self._url)
        self._publisher = redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=PUBLISH_CONNECTIONS,
                timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
                health_check_interval=PUBLISHER_HEALTH_CHECK,
                **options,
            ),
            # One immediate retry on a fresh connection hides a connection that
            # Redis closed while idle; a second failure means Redis is down.
            retry=Retry(NoBackoff(), 1),
        )
        self._history = (
            RedisHistory(
                self._publisher,
                settings.channel_prefix,
                settings.history_size,
                settings.history_ttl,
            )
            if settings.history_size
            else None
        )
        self._subscriber_options = options
        self._rooms: set[str] = set()  # rooms with local members
        self._acks: dict[bytes, asyncio.Future[None]] = {}  # SUBSCRIBE awaiting Redis
        self._commands: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self.healthy = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis-subscriber")
        # Boot does not wait for Redis: the app serves /healthz (503) meanwhile.
        try:
            await asyncio.wait_for(self._connected.wait(), REDIS_TIMEOUT)
        except TimeoutError:
            log.warning("redis not reachable yet at %s; retrying", mask_url(self._url))

    async def close(self) -> None:
        # The subscriber task checks this flag between reads: it ends within one
        # POLL even if a cancellation is lost inside redis-py's timed reads (seen
        # under aiohttp's shutdown), and the task is cancelled as well.
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=REDIS_TIMEOUT)
        await self._publisher.aclose(close_connection_pool=True)

    async def subscribe(self, room: str) -> None:
        """Return once Redis confirms the subscription, so a message published
        after this returns reaches the room's members."""
        if not self.healthy:
            raise BrokerUnavailable
        channel = (self._prefix + room).encode()
        ack = self._acks.get(channel)
        if ack is None:
            ack = self._acks[channel] = asyncio.get_running_loop().create_future()
            self._rooms.add(room)
            self._commands.put_nowait(("subscribe", room))
        try:
            await asyncio.wait_for(asyncio.shield(ack), REDIS_TIMEOUT)
        except (TimeoutError, BrokerUnavailable):
            self._acks.pop(channel, None)
            self._rooms.discard(room)
            raise BrokerUnavailable from None

    async def unsubscribe(self, room: str) -> None:
        self._rooms.discard(room)
        if self.healthy:
            self._commands.put_nowait(("unsubscribe", room))

    async def publish(self, room: str, text: str) -> None:
        try:
            if self._history is None:
                await self._publisher.publish(self._prefix + room, text)
            else:
                await self._history.append(room, text)
        except (RedisError, OSError) as error:
            raise BrokerUnavailable from error

    async def read(self, room: str, since: int | None, last: int) -> Window:
        assert self._history is not None  # the node reads only with history on
        try:
            return await self._history.read(room, since, last)
        except (RedisError, OSError) as error:
            raise BrokerUnavailable from error

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            client = redis.Redis.from_url(
                self._url,
                max_connections=1,
                socket_timeout=REDIS_TIMEOUT,
                # No silent retries: a failure surfaces here, where the members
                # can be told about the gap once the connection is back.
                retry=Retry(NoBackoff(), 0),
                **self._subscriber_options,
            )
            pubsub = client.pubsub()
            try:
                await self._subscribe_all(pubsub)
                attempt = 0
                await self._pump(pubsub)
            except (RedisError, OSError, TimeoutError) as error:
                reason = str(error) or type(error).__name__
                if self.healthy:
                    log.warning("redis subscriber lost, reconnecting: %s", reason)
                elif attempt == 0:
                    log.warning("redis unreachable, retrying: %s", reason)
                else:  # one warning per outage; the retries themselves are routine
                    log.debug(
                        "redis still unreachable (attempt %d): %s", attempt, reason
                    )
            except Exception:
                # A bug, not an outage: the task must not die of it, or every room
                # of the process would go silent. Start afresh, as after an outage.
                log.exception("redis subscriber failed; reconnecting")
            finally:
                self.healthy = False
                self._fail_pending()
                await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
                await _quietly(client.aclose())
            attempt += 1
            delay = random.uniform(0, min(RETRY_CAP, RETRY_FIRST * 2 ** (attempt - 1)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _subscribe_all(self, pubsub: PubSub) -> None:
        """Subscribe every local room on a fresh connection, then report the gap."""
        rooms = sorted(self._rooms)
        if rooms:
            await pubsub.subscribe(*(self._prefix + room for room in rooms))
        else:
            await pubsub.ping()  # opens the connection; answered with a pong
        await self._confirm(pubsub, len(rooms) or 1)
        resumed = self._connected.is_set()
        self.healthy = True
        self._connected.set()
        log.info(
            "redis subscriber connected to %s (%d rooms)",
            mask_url(self._url),
            len(rooms),
        )
        if resumed:
            # Redis may have restarted: the idle publishing connections may be to
            # the server that is gone, and the first command on one fails despite
            # the retry above (redis-py 8.1), which would fail a publish or the
            # healing read. They are opened afresh when next used.
            await self._publisher.connection_pool.disconnect(inuse_connections=False)
        if resumed and rooms:
            self._listener.on_resubscribed(rooms)

    async def _confirm(self, pubsub: PubSub, answers: int) -> None:
        """Wait for Redis to answer a new connection's SUBSCRIBE (or PING)."""
        async with asyncio.timeout(REDIS_TIMEOUT):
            while answers:
                message = await pubsub.get_message(timeout=REDIS_TIMEOUT)
                if message is not None and message["type"] in ("subscribe", "pong"):
                    answers -= 1

    async def _pump(self, pubsub: PubSub) -> None:
        """Forward messages, run joins and leaves, and watch the connection's health."""
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while not self._stopping.is_set():
            while not self._commands.empty():
                verb, room = self._commands.get_nowait()
                if verb == "subscribe":
                    await pubsub.subscribe(self._prefix + room)
                elif room not in self._rooms:  # not rejoined since it was left
                    await pubsub.unsubscribe(self._prefix + room)
            message = await pubsub.get_message(timeout=POLL)
            now = loop.time()
            if message is not None:
                heard = now
                self._handle(message)
            if now - pinged >= HEALTH_INTERVAL:
                pinged = now
                await pubsub.ping()
            if now - heard > HEALTH_INTERVAL + HEALTH_GRACE:
                raise TimeoutError(f"no answer from Redis for {now - heard:.1f} s")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            channel: bytes = message["channel"]
            data: bytes = message["data"]
            try:
                text = data.decode()
            except UnicodeDecodeError:
                log.warning(
                    "dropped a message on %s: not UTF-8",
                    channel.decode(errors="replace"),
                )
                return
            room = channel.decode()[len(self._prefix) :]
            self._listener.on_message(room, Payload(text, data))
        elif kind == "subscribe":
            ack = self._acks.pop(message["channel"], None)
            if ack is not None and not ack.done():
                ack.set_result(None)

    def _fail_pending(self) -> None:
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(BrokerUnavailable())
        self._acks.clear()
        # Commands for the lost connection: the next one subscribes _rooms afresh.
        while not self._commands.empty():
            self._commands.get_nowait()


async def _quietly(closing: Awaitable[object]) -> None:
    with contextlib.suppress(RedisError, OSError):
        await closing


def make_broker(settings: Settings, listener: Listener) -> Broker:
    if settings.redis_url is None:
        return MemoryBroker(settings, listener)
    return RedisBroker(settings, settings.redis_url, listener)
