"""Hostile input through real sockets, all at once, while well-behaved clients work.

test_errors.py, test_frames.py and test_http.py check each fault alone. Here one app
is besieged for at least 35 s: stalled sockets hold on the whole time while rounds
of every client-causable error, close code, fragmentation trick, flood, handshake
past the cap and forbidden Origin run. Two bystanders publish and receive a
numbered sequence throughout; none of it may reach them, and the process stays up.
"""

import json
import selectors
import socket
import statistics
import threading
import time

import pytest
from conftest import make_token, new_user

# Each setting is small so that its limit is cheap to reach in every round.
SIEGE = {
    "WS_MAX_CONNECTIONS": "30",  # the cap is reached with 28 handshakes
    "WS_MAX_ROOMS": "2",  # the third join is refused
    "WS_MAX_MESSAGE_BYTES": "4096",  # 1009 without megabyte frames
    # A flood of FLOOD frames empties the bucket at once; the bystanders' publisher
    # (1 / BYSTANDER_PACE a second) stays far below the rate.
    "WS_RATE_LIMIT": "10",
    "WS_RATE_BURST": "20",
}
MAX_CONNECTIONS = int(SIEGE["WS_MAX_CONNECTIONS"])
MAX_BYTES = int(SIEGE["WS_MAX_MESSAGE_BYTES"])
FLOOD = 60  # three bucketfuls
# Past Heroku's 30 s handshake window (H12): a server that waits for a stalled
# handshake longer than the router would holds its socket for nothing.
STALL_SECONDS = 35
BYSTANDER_PACE = 0.25  # seconds between the bystanders' messages: 4 a second
# Loopback delivery takes milliseconds; 5 s is room for a loaded 2-core CI machine.
DELIVERY_SECONDS = 5
# A closed connection frees its slot once the server has seen the close; a client
# that never answers a close is dropped after CLOSE_TIMEOUT (5 s): 10 s is ample.
RELEASE_SECONDS = 10
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class Bystanders:
    """Two clients in one room: ``publisher`` sends 0, 1, 2, ... and both must
    receive each number, in order, within DELIVERY_SECONDS; a background thread."""

    def __init__(self, publisher, listener, room: str):
        self.publisher, self.listener, self.room = publisher, listener, room
        self.delivered = 0
        self.round_trips: list[float] = []
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.publisher.join(self.room)
        self.listener.join(self.room)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                expected = self.publisher.sent(self.room, self.delivered)
                sent = time.monotonic()
                self.publisher.send(
                    {"type": "publish", "room": self.room, "data": self.delivered}
                )
                assert self.listener.message(DELIVERY_SECONDS) == expected
                self.round_trips.append(time.monotonic() - sent)
                assert self.publisher.message(DELIVERY_SECONDS) == expected
                assert self.publisher.reply(DELIVERY_SECONDS) == {
                    "type": "published",
                    "room": self.room,
                }
                self.delivered += 1
                self._stop.wait(BYSTANDER_PACE)
        except BaseException as error:  # pytest.fail raises a BaseException
            self.failure = error

    def check(self) -> None:
        if self.failure is not None:
            pytest.fail(f"a bystander was disturbed: {self.failure!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(DELIVERY_SECONDS * 3)
        assert not self._thread.is_alive(), "the bystanders never finished"


class StalledSockets:
    """A TCP connection that never sends a byte, and one that sends half an
    upgrade request and stops; a thread notes when the server closes either."""

    def __init__(self, port: int):
        self.opened = time.monotonic()
        self.silent = socket.create_connection(("127.0.0.1", port))
        self.half = socket.create_connection(("127.0.0.1", port))
        # The request line and some headers, never the blank line that ends them.
        self.half.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n".encode()
        )
        self.closed_after: dict[str, float] = {}
        self.answers = {"silent": b"", "half": b""}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.silent, selectors.EVENT_READ, "silent")
            selector.register(self.half, selectors.EVENT_READ, "half")
            while selector.get_map() and not self._stop.is_set():
                # 0.1 s: the poll interval for the stop flag, and the precision of
                # the closing times noted.
                for key, _ in selector.select(timeout=0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)  # registered above
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        data = b""
                    if data:  # an answer (a 400 or 408, say) before closing
                        self.answers[key.data] += data
                        continue
                    self.closed_after[key.data] = time.monotonic() - self.opened
                    selector.unregister(sock)

    def held(self) -> float:
        return time.monotonic() - self.opened

    def fate(self, name: str) -> str:
        """What the server did with the stalled socket, for the record."""
        answer = self.answers[name].split(b"\r\n", 1)[0].decode("latin-1")
        answered = f" (answered {answer!r})" if answer else ""
        if name in self.closed_after:
            return (
                f"closed by the server after {self.closed_after[name]:.0f} s{answered}"
            )
        return f"still open after {self.held():.0f} s{answered}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.silent.close()
        self.half.close()


def expect_error(reply: dict, code: str, ref: str | None) -> None:
    expected = {"type": "error", "code": code, "message": reply.get("message")}
    if ref is not None:
        expected["ref"] = ref
    assert reply == expected, reply
    assert isinstance(reply["message"], str) and reply["message"].strip()


def every_error(app, ws_client, new_room) -> None:
    """Every error code a client can cause, each answered on a connection that
    lives on; then a flood past the rate limit, answered frame by frame."""
    client = ws_client(app)
    first, second = new_room(), new_room()
    client.join(first)
    client.join(second)
    for frame, code in [
        ("not json", "invalid_json"),
        ({"type": "join", "ref": "r1"}, "invalid_message"),
        ({"type": "dance", "ref": "r2"}, "unknown_type"),
        ({"type": "join", "room": "a b", "ref": "r3"}, "invalid_room"),
        ({"type": "join", "room": new_room(), "ref": "r4"}, "too_many_rooms"),
    ]:
        ref = frame.get("ref") if isinstance(frame, dict) else None
        expect_error(client.request(frame), code, ref)
        client.assert_alive()
    for index in range(FLOOD):
        client.send({"type": "ping", "ref": f"f{index}"})
    replies = [client.reply() for _ in range(FLOOD)]
    assert [reply["ref"] for reply in replies] == [f"f{i}" for i in range(FLOOD)]
    limited = [reply for reply in replies if reply["type"] == "error"]
    for reply in limited:
        expect_error(reply, "rate_limited", reply["ref"])
    # At most the bucket plus a bucketful refilled (2 s) while the flood is read.
    assert len(limited) >= FLOOD - 2 * int(SIEGE["WS_RATE_BURST"]), replies
    # The bucket refills at WS_RATE_LIMIT a second: the connection lives on.
    wait_until_pong(client)
    client.close()


def wait_until_pong(client) -> None:
    deadline = time.monotonic() + 5  # 50 tokens' worth of refill
    while client.request({"type": "ping"}) != {"type": "pong"}:
        assert time.monotonic() < deadline, "the token bucket never refilled"
        time.sleep(0.2)  # poll interval: two tokens


def every_close_code(app, raw_ws) -> None:
    """Each client-causable protocol fault closes its connection with its code."""
    ping = b'{"type": "ping", "ref": "'
    faults = {
        "binary frame": (1003, [(BINARY, b'{"type": "ping"}', True)]),
        "invalid UTF-8": (1007, [(TEXT, ping + b'\xc3\x28"}', True)]),
        # Each fragment is valid on its own; the sequence across them is not.
        "invalid UTF-8 across fragments": (
            1007,
            [(TEXT, ping + b"\xc3", False), (CONTINUATION, b'\x28"}', True)],
        ),
        "frame over the limit": (1009, [(TEXT, b" " * (MAX_BYTES + 1), True)]),
        # Fragments cannot smuggle a message past the limit either.
        "message over the limit in fragments under it": (
            1009,
            [(TEXT, ping + b"x" * (MAX_BYTES - 100), False)]
            + [(CONTINUATION, b"x" * 200, False), (CONTINUATION, b'"}', True)],
        ),
    }
    for what, (code, frames) in faults.items():
        status, _, ws = raw_ws(app)
        assert status == 101
        for opcode, payload, fin in frames:
            ws.send_frame(opcode, payload, fin)
        assert ws.close_code() == code, what
        ws.close()


def fragmented_message(app, raw_ws, new_room) -> None:
    """A publish in three fragments, a Ping between them and a two-byte character
    split across two of them, is answered like a whole one."""
    room = new_room()
    _, _, ws = raw_ws(app, auth=False)
    user = ws.authenticate(make_token(new_user()))["user"]
    ws.send_text(json.dumps({"type": "join", "room": room}))
    assert ws.recv_json() == {"type": "joined", "room": room}
    frame = {"type": "publish", "room": room, "data": "café ✓", "ref": "frag"}
    text = json.dumps(frame, ensure_ascii=False).encode()
    cut = text.index("é".encode()) + 1  # between the two bytes of é
    ws.send_frame(TEXT, text[:cut], fin=False)
    ws.send_frame(PING, b"mid-message")
    ws.send_frame(CONTINUATION, text[cut : cut + 5], fin=False)
    ws.send_frame(CONTINUATION, text[cut + 5 :], fin=True)
    expected = [
        {"type": "published", "room": room, "ref": "frag"},
        {"type": "message", "room": room, "data": "café ✓", "from": user},
    ]
    pongs: list[bytes] = []
    texts: list[object] = []
    while len(texts) < len(expected):
        opcode, payload = ws.recv_frame(DELIVERY_SECONDS)
        if opcode == PONG:
            pongs.append(payload)
        elif opcode == TEXT:
            texts.append(json.loads(payload))
        else:
            assert opcode == PING, f"unexpected frame {opcode:#x}: {payload!r}"
    assert pongs == [b"mid-message"]
    assert sorted(texts, key=json.dumps) == sorted(expected, key=json.dumps)
    ws.close()


def handshakes_past_the_cap(app, raw_ws, wait_until, bystanders: int) -> float:
    """Fill every slot: the next handshake gets 503, one freed slot lets one
    more in. Returns the slowest admitted handshake (s)."""
    # Also proves that the stalled sockets hold no slot: only the bystanders count.
    wait_until(
        lambda: app.connections() == bystanders,
        RELEASE_SECONDS,
        "every connection of the round to be released",
    )
    admitted, slowest = [], 0.0
    for _ in range(MAX_CONNECTIONS - bystanders):
        started = time.monotonic()
        status, _, ws = raw_ws(app)
        slowest = max(slowest, time.monotonic() - started)
        assert status == 101
        admitted.append(ws)
    status, _, refused = raw_ws(app)
    assert status == 503, "a handshake past WS_MAX_CONNECTIONS was not refused"
    refused.close()
    assert app.connections() == MAX_CONNECTIONS
    admitted.pop().close()
    wait_until(
        lambda: app.connections() < MAX_CONNECTIONS,
        RELEASE_SECONDS,
        "a closed connection to free its slot",
    )
    status, _, last = raw_ws(app)
    assert status == 101, "a freed slot was not given to the next handshake"
    for ws in [*admitted, last]:
        ws.close()
    return slowest


@pytest.mark.slow
def test_siege(start_app, ws_client, raw_ws, new_room, wait_until, record_property):
    """Stalled sockets held 35 s while rounds of hostile input run: every reply and
    close code is the contract's, and the bystanders lose nothing."""
    app = start_app(**SIEGE)
    bystanders = Bystanders(ws_client(app), ws_client(app), new_room())
    bystanders.start()
    stalled = StalledSockets(app.port)
    rounds, slowest_handshake = 0, 0.0
    try:
        while stalled.held() < STALL_SECONDS:
            before = bystanders.delivered
            every_error(app, ws_client, new_room)
            every_close_code(app, raw_ws)
            fragmented_message(app, raw_ws, new_room)
            slowest = handshakes_past_the_cap(app, raw_ws, wait_until, bystanders=2)
            slowest_handshake = max(slowest_handshake, slowest)
            status, _, ws = raw_ws(app, headers={"Origin": "https://evil.example"})
            assert status == 403, "a handshake from a forbidden Origin was not refused"
            ws.close()
            rounds += 1
            bystanders.check()
            # They kept working during the round, not only between rounds.
            wait_until(
                lambda before=before: bystanders.delivered > before,
                DELIVERY_SECONDS,
                "a bystander message during the round",
            )
        held = stalled.held()
        bystanders.check()
    finally:
        bystanders.stop()
        stalled.close()
    bystanders.check()

    assert app.process.poll() is None, f"the app exited; its log:\n{app.log()}"
    status, health = app.healthz()
    assert (status, health["status"]) == (200, "ok")
    wait_until(
        lambda: app.connections() == 2, RELEASE_SECONDS, "only the bystanders left"
    )
    bystanders.publisher.assert_alive()
    bystanders.listener.assert_alive()

    record_property("siege rounds", rounds)
    record_property("stalled sockets held (s)", round(held, 1))
    record_property("bystander messages delivered, in order", bystanders.delivered)
    trips = bystanders.round_trips
    record_property(
        "bystander round trip, median (ms)", round(statistics.median(trips) * 1e3, 1)
    )
    record_property("bystander round trip, worst (ms)", round(max(trips) * 1e3, 1))
    record_property(
        "slowest handshake under siege (ms)", round(slowest_handshake * 1e3, 1)
    )
    record_property("silent TCP connection", stalled.fate("silent"))
    record_property("half-sent handshake", stalled.fate("half"))
