"""One load-generating process: many WebSocket clients on one event loop.

The harness starts several of these (none holds more than a few thousand sockets,
so no process nears the file limit or a full core) and drives each over its
stdin/stdout, one JSON command per line, one JSON answer per line.

The clients speak WebSocket by hand on an asyncio Protocol instead of using a
library: per received frame they do a header parse, a substring search and a
dict update, so the load generator costs far less CPU than the servers it
measures. Every time is ``time.monotonic()``, one clock for every process on the
machine, so a publisher's timestamp can be compared with another process's
receipt.

With identity (the harness passes tokens), a client sends its auth frame right
after the 101 and counts as connected once ``authed`` is back, as a browser
that must authenticate before it can do anything: the connect rate includes
authentication. The harness mints the tokens; a client only carries its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import resource
import socket
import struct
import sys
import time
from typing import Any, cast

# Latency histogram: bucket b holds latencies in [1.02**b, 1.02**(b+1)) microseconds,
# a 2 % resolution that merges across processes exactly (percentiles do not).
BUCKET_BASE = math.log(1.02)
ROOM = "bench"


class Worker:
    """What the clients of this process received, per published sequence number."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.publisher: Client | None = None
        self.slow: Client | None = None
        # seq -> [receipts, last receipt time]
        self.received: dict[int, list[float]] = {}
        self.histogram: dict[int, int] = {}
        self.waiters: dict[int, asyncio.Future[None]] = {}

    def on_message(self, client: Client, payload: bytes, now: float) -> None:
        if client is not self.publisher and client is not self.slow:
            seq = int(number(payload, b'"seq":'))
            if client.recovery is not None:
                client.recovery.receive(seq, now)
            entry = self.received.get(seq)
            if entry is None:
                entry = self.received[seq] = [0, now]
            entry[0] += 1
            entry[1] = now
            latency_us = (now - number(payload, b'"t":')) * 1e6
            bucket = int(math.log(max(latency_us, 1.0)) / BUCKET_BASE)
            self.histogram[bucket] = self.histogram.get(bucket, 0) + 1
            if entry[0] >= len(self.clients):
                waiter = self.waiters.pop(seq, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)


class Recovery:
    """What one client of a reconnect storm received of the messages it missed,
    numbered ``first`` to ``first + missed - 1``: counted in order, each once."""

    def __init__(self, first: int, missed: int) -> None:
        self.next = first
        self.end = first + missed
        self.delivered = self.duplicates = self.out_of_order = 0
        self.last = 0.0  # when the last missed message came
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not missed:
            self.done.set_result(None)

    def receive(self, seq: int, now: float) -> None:
        if seq < self.next:
            self.duplicates += 1
            return
        if seq > self.next:  # one or more before it skipped, or still to come
            self.out_of_order += 1
        self.delivered += seq < self.end
        self.next = seq + 1
        if seq < self.end:
            self.last = now
        if self.next >= self.end and not self.done.done():
            self.done.set_result(None)


def number(payload: bytes, key: bytes) -> float:
    """The number after ``key`` in a JSON text, with or without a space after the
    colon (the apps re-encode ``data`` with json.dumps' default separators)."""
    start = payload.index(key) + len(key)
    while payload[start] == 32:
        start += 1
    end = start
    while payload[end] in b"0123456789.-e+":
        end += 1
    return float(payload[start:end])


def mask(data: bytes) -> bytes:
    """A client frame's payload XORed with a fresh 4-byte key, key first."""
    key = os.urandom(4)
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    masked = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return key + masked.to_bytes(len(data), "big")


def frame(opcode: int, data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + mask(data)


class Client(asyncio.Protocol):
    """One WebSocket connection: handshake, then server frames parsed in place."""

    def __init__(self, worker: Worker, host: str, port: int, path: str) -> None:
        self.worker = worker
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport  # from connection_made, before any use
        self.buffer = bytearray()
        self.upgraded = False
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.close_code: int | None = None
        self.bytes_received = 0
        self.token: str | None = None  # its own, again on a reconnect
        # The publisher's: how many publishes the server has accepted.
        self.acks = 0
        self.acked: asyncio.Future[None] | None = None
        self.acks_wanted = 0
        # In a reconnect storm: the missed messages' numbers, and what came.
        self.recovery: Recovery | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream's: create_connection makes a read-write transport.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before 101: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)
        # An empty reply: whoever awaits one (authed, joined) learns at once that
        # none will come, e.g. after a 4401, instead of at its timeout.
        self.replies.put_nowait(b"")

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.bytes_received += len(data)
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[:end]).split(b" ", 2)[1]
            del buffer[: end + 4]
            if status != b"101":
                self.opened.set_exception(ConnectionError(f"HTTP {status.decode()}"))
                self.transport.close()
                return
            self.upgraded = True
            self.opened.set_result(None)
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,) = struct.unpack_from("!H", buffer, 2)
                start = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,) = struct.unpack_from("!Q", buffer, 2)
                start = 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == 1:
                if b'"seq":' in payload:
                    self.worker.on_message(self, payload, now)
                elif self is not self.worker.publisher:
                    self.replies.put_nowait(payload)
                elif b'"published"' in payload:  # counted, not queued: thousands
                    self.acks += 1
                    if self.acked is not None and self.acks >= self.acks_wanted:
                        self.acked.set_result(None)
                        self.acked = None
            elif opcode == 9:  # ping: the servers' keep-alive wants a pong
                self.transport.write(frame(10, payload))
            elif opcode == 8:
                if len(payload) >= 2:
                    (self.close_code,) = struct.unpack_from("!H", payload)
                self.transport.write(frame(8, payload[:2]))
                self.transport.close()

    def send_text(self, text: str) -> None:
        self.transport.write(frame(1, text.encode()))


async def open_client(
    worker: Worker,
    host: str,
    port: int,
    path: str,
    rcvbuf: int | None = None,
    token: str | None = None,
) -> Client:
    """A connection open (and authenticated, with a token) or an exception."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf is not None:
        # Before connect, so the window the server sees stays this small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await loop.sock_connect(sock, (host, port))
    _, client = await loop.create_connection(
        lambda: Client(worker, host, port, path), sock=sock
    )
    # The handshake must finish well inside the apps' 10 s open timeout.
    await asyncio.wait_for(client.opened, 30)
    if token is not None:
        client.token = token
        await authenticate(client, token)
    return client


def refused(client: Client, reply: bytes) -> str:
    """What the server said instead of the reply a request wanted."""
    return reply.decode() if reply else f"closed, code {client.close_code}"


async def authenticate(client: Client, token: str) -> None:
    """The auth frame, first; the apps answer it with authed or an error.

    Well inside AUTH_TIMEOUT (10 s): a connection still waiting then is closed
    with 4401 and fails here with that code.
    """
    client.send_text(json.dumps({"type": "auth", "token": token}))
    reply = await asyncio.wait_for(client.replies.get(), 30)
    if b'"authed"' not in reply:
        # ConnectionError: connect() counts it as a failed connection, with this.
        raise ConnectionError(f"auth: {refused(client, reply)}")


async def join(client: Client, since: dict[str, Any] | None = None) -> dict[str, Any]:
    """Join the room (from ``since``, a position); the ``joined`` reply."""
    request: dict[str, Any] = {"type": "join", "room": ROOM}
    if since is not None:
        request["since"] = since
    client.send_text(json.dumps(request))
    while True:
        reply = await asyncio.wait_for(client.replies.get(), 60)
        if b"joined" in reply:
            joined: dict[str, Any] = json.loads(reply)
            return joined
        if b"error" in reply or not reply:
            raise RuntimeError(f"join: {refused(client, reply)}")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def connected(client: Client | None) -> Client:
    """The publisher or the slow client, once a command has connected it."""
    if client is None:
        raise RuntimeError("not connected: the harness sends connect or slow first")
    return client


def publish_text(app: bool, seq: int, pad: str) -> str:
    data = {"seq": seq, "t": time.monotonic(), "pad": pad}
    kind = "publish" if app else "message"
    return json.dumps({"type": kind, "room": ROOM, "data": data}, separators=(",", ":"))


async def handle(worker: Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    """One command from the harness; its answer."""
    name = cmd["cmd"]
    if name == "connect":
        return await connect(worker, cmd)
    if name == "join":
        started = time.monotonic()
        replies = await asyncio.gather(*(join(client) for client in worker.clients))
        # The room's position as the last to join saw it (with history: its
        # offset and epoch; nothing is published while they join).
        position = {key: replies[-1].get(key) for key in ("offset", "epoch")}
        return {"started": started, "joined": time.monotonic(), "position": position}
    if name == "publish":
        text = publish_text(cmd["app"], cmd["seq"], cmd.get("pad", ""))
        connected(worker.publisher).send_text(text)
        return {"t": number(text.encode(), b'"t":')}
    if name == "rate":
        return await publish_at_rate(worker, cmd)
    if name == "publish_confirmed":
        return await publish_confirmed(worker, cmd)
    if name == "storm":
        return await storm(worker, cmd)
    if name == "await":
        return await await_seq(worker, cmd["seq"], cmd["timeout"])
    if name == "histogram":
        histogram, worker.histogram = worker.histogram, {}
        return {"histogram": histogram}
    if name == "received":
        lo, hi = cmd["lo"], cmd["hi"]
        entries = [worker.received.get(seq, (0, 0.0)) for seq in range(lo, hi)]
        return {
            "count": sum(entry[0] for entry in entries),
            "last": max((entry[1] for entry in entries), default=0.0),
        }
    if name == "cpu":
        return {"cpu": cpu_seconds()}
    if name == "slow":
        return await open_slow(worker, cmd)
    if name == "slow_check":
        return await check_slow(worker)
    if name == "close":
        for client in [*worker.clients, worker.publisher, worker.slow]:
            if client is not None:  # every client here has its transport
                client.transport.abort()
        return {"closed": True}
    raise ValueError(f"unknown command {name}")


async def connect(worker: Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    """Open ``count`` connections, at most ``window`` in flight from the first
    byte of the handshake to the 101, or to ``authed`` when ``tokens`` (one per
    connection) are given. Joining the room is the ``join`` command's, after, so
    the harness can tell the server's CPU for connecting from that for joining."""
    host, port, path = cmd["host"], cmd["port"], cmd["path"]
    if cmd.get("publisher"):
        worker.publisher = await open_client(
            worker, host, port, path, token=cmd.get("token")
        )
        return {"ok": True}
    count = cmd["count"]
    tokens: list[str | None] = cmd.get("tokens") or [None] * count
    if len(tokens) != count:
        raise ValueError(f"{len(tokens)} tokens for {count} connections")
    window = asyncio.Semaphore(cmd["window"])
    failures: list[str] = []

    async def one(token: str | None) -> None:
        async with window:
            try:
                client = await open_client(worker, host, port, path, token=token)
            except (OSError, ConnectionError, TimeoutError) as exc:
                failures.append(repr(exc))
            else:
                worker.clients.append(client)

    started = time.monotonic()
    await asyncio.gather(*(one(token) for token in tokens))
    return {
        "started": started,
        "opened": time.monotonic(),
        "connected": len(worker.clients),
        "failures": failures[:5],
        "failed": len(failures),
    }


async def await_seq(worker: Worker, seq: int, within: float) -> dict[str, Any]:
    """Once every client here has message ``seq`` (or timeout): count, last time."""
    entry = worker.received.get(seq)
    if entry is None or entry[0] < len(worker.clients):
        waiter = worker.waiters[seq] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, within)
        except TimeoutError:
            worker.waiters.pop(seq, None)
    entry = worker.received.get(seq, [0, 0.0])
    return {"count": entry[0], "last": entry[1]}


async def publish_at_rate(worker: Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    """Publish ``rate`` messages per second for ``seconds``, on a fixed schedule
    (a late send does not shift the ones after it), numbered from ``seq``."""
    rate, seconds, seq = cmd["rate"], cmd["seconds"], cmd["seq"]
    publisher = connected(worker.publisher)
    count = max(1, round(rate * seconds))
    started = time.monotonic()
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        publisher.send_text(publish_text(cmd["app"], seq + i, ""))
    return {"started": started, "sent": count, "ended": time.monotonic()}


async def publish_confirmed(worker: Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    """Publish ``count`` messages numbered from ``seq``; answer once the server
    has accepted every one (with history: each is in it)."""
    publisher = connected(worker.publisher)
    publisher.acks_wanted = publisher.acks + cmd["count"]
    publisher.acked = asyncio.get_running_loop().create_future()
    for i in range(cmd["count"]):
        publisher.send_text(publish_text(True, cmd["seq"] + i, ""))
    if publisher.acks < publisher.acks_wanted:
        # At most 100 publishes to an idle server: milliseconds; a minute means
        # the replies are not coming, and the harness reports it.
        await asyncio.wait_for(publisher.acked, 60)
    return {"acks": publisher.acks}


async def storm(worker: Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    """Every client of this process, its connection gone (a deploy), reconnects
    at once to ``port``: handshake and auth (at most ``window`` in flight, as
    connect), then at once a join with ``since``, then it waits for the
    ``missed`` messages numbered from ``first``. When each step ended, and what
    arrived."""
    host, port, path = cmd["host"], cmd["port"], cmd["path"]
    since, first, missed = cmd["since"], cmd["first"], cmd["missed"]
    window = asyncio.Semaphore(cmd["window"])
    before, worker.clients = worker.clients, []
    for old in before:  # closed by the server already; nothing left to read
        old.transport.abort()
    opened: list[float] = []
    joined: list[float] = []
    recovered = 0
    recoveries: list[Recovery] = []

    async def one(token: str | None) -> None:
        nonlocal recovered
        async with window:
            client = await open_client(worker, host, port, path, token=token)
        opened.append(time.monotonic())
        worker.clients.append(client)
        client.recovery = recovery = Recovery(first, missed)
        recoveries.append(recovery)
        reply = await join(client, since)
        joined.append(time.monotonic())
        if reply.get("recovered") is True:
            recovered += 1
            # The apps replay right after joined: within the round timeout.
            await asyncio.wait_for(recovery.done, 60)

    started = time.monotonic()
    await asyncio.gather(*(one(old.token) for old in before))
    for client in worker.clients:
        client.recovery = None
    return {
        "started": started,
        "opened": max(opened),
        "joined": max(joined),
        # A client with nothing to recover is done at its joined.
        "recovered_at": max([*joined, *(r.last for r in recoveries)]),
        "recovered": recovered,
        "delivered": sum(r.delivered for r in recoveries),
        "duplicates": sum(r.duplicates for r in recoveries),
        "out_of_order": sum(r.out_of_order for r in recoveries),
    }


async def open_slow(worker: Worker, cmd: dict[str, Any]) -> dict[str, Any]:
    """A client that joins and then reads nothing: a phone in a tunnel."""
    client = await open_client(
        worker,
        cmd["host"],
        cmd["port"],
        cmd["path"],
        rcvbuf=cmd["rcvbuf"],
        token=cmd.get("token"),
    )
    if cmd["join"]:
        await join(client)
    client.transport.pause_reading()
    worker.slow = client
    return {"ok": True}


async def check_slow(worker: Worker) -> dict[str, Any]:
    """Read again: did the server close the slow client, and with which code?"""
    client = connected(worker.slow)
    client.transport.resume_reading()
    try:
        # Whatever the server buffered arrives in well under this on loopback.
        await asyncio.wait_for(asyncio.shield(client.closed), 10)
        closed = True
    except TimeoutError:
        closed = False
    return {"closed": closed, "code": client.close_code, "bytes": client.bytes_received}


async def main() -> None:
    loop = asyncio.get_running_loop()
    # A connect command carries a token per connection: 3,000 of about 220 bytes
    # is 0.7 MB on one line.
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    worker = Worker()
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            answer = await handle(worker, cmd)
        except Exception as exc:  # the harness reports it with the command
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if cmd["cmd"] == "close":
            return


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # plain asyncio works, only slower
        asyncio.run(main())
    else:
        uvloop.run(main())
