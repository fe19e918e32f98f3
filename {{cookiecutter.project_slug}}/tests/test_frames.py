"""Protocol-level faults, slow consumers and keep-alive, on raw sockets."""

import json
import selectors
import socket
import threading
import time

import pytest

SMALL_FRAMES = {"WS_MAX_MESSAGE_BYTES": "1024"}
# Short keep-alive so a test sees several rounds in a second.
KEEPALIVE = {"WS_PING_INTERVAL": "0.2", "WS_PING_TIMEOUT": "0.5"}
PING, PONG, CLOSE, TEXT = 0x9, 0xA, 0x8, 0x1


def publish_frame_of_size(size: int, room: str = "r") -> str:
    empty = json.dumps({"type": "publish", "room": room, "data": ""})
    return json.dumps(
        {"type": "publish", "room": room, "data": "a" * (size - len(empty))}
    )


def test_binary_frame_closes_1003(shared_app, raw_ws, ws_client):
    app = shared_app(**SMALL_FRAMES)
    bystander = ws_client(app)
    _, _, ws = raw_ws(app)
    ws.send_frame(0x2, b'{"type": "ping"}')
    assert ws.close_code() == 1003
    bystander.assert_alive()


def test_invalid_utf8_text_closes_1007(shared_app, raw_ws, ws_client):
    app = shared_app(**SMALL_FRAMES)
    bystander = ws_client(app)
    _, _, ws = raw_ws(app)
    ws.send_frame(TEXT, b'{"type": "ping", "ref": "\xc3\x28"}')
    assert ws.close_code() == 1007
    bystander.assert_alive()


def test_frame_at_the_size_limit_is_accepted(shared_app, raw_ws):
    app = shared_app(**SMALL_FRAMES)
    _, _, ws = raw_ws(app)
    text = publish_frame_of_size(1024)
    assert len(text.encode()) == 1024
    ws.send_text(text)
    assert ws.recv_json() == {"type": "published", "room": "r"}


def test_frame_over_the_size_limit_closes_1009(shared_app, raw_ws, ws_client):
    app = shared_app(**SMALL_FRAMES)
    bystander = ws_client(app)
    _, _, ws = raw_ws(app)
    ws.send_text(publish_frame_of_size(1025))
    assert ws.close_code() == 1009
    bystander.assert_alive()


def test_frame_over_the_default_size_limit_closes_1009(memory_app, raw_ws):
    _, _, ws = raw_ws(memory_app)
    ws.send_text(publish_frame_of_size(65537))
    assert ws.close_code() == 1009


def test_slow_consumer_is_closed_1013_and_others_get_everything(
    start_app, raw_ws, ws_client, new_room
):
    """A member that stops reading is cut off with 1013 once more than
    WS_MAX_PENDING_BYTES wait for it; a reading member gets every message."""
    app = start_app(
        WS_MAX_PENDING_BYTES="65536", WS_RATE_LIMIT="100000", WS_RATE_BURST="100000"
    )
    room = new_room()
    # A tiny receive window, so the kernel cannot absorb the flood for it.
    _, _, slow = raw_ws(app, rcvbuf=4096)
    slow.send_text(json.dumps({"type": "join", "room": room}))
    assert slow.recv_json() == {"type": "joined", "room": room}
    reader = ws_client(app)
    reader.join(room)
    publisher = ws_client(app)
    pad = "x" * 16000
    # 6.4 MB: well past the limit plus every socket buffer on the way.
    count, window = 400, 10
    for start in range(0, count, window):
        for seq in range(start, start + window):
            publisher.send({"type": "publish", "room": room, "data": [seq, pad]})
        for _ in range(window):
            assert publisher.reply() == {"type": "published", "room": room}
    for seq in range(count):
        assert reader.message() == publisher.sent(room, [seq, pad])
    reader.assert_quiet(0.3)
    # The slow member now reads: an in-order prefix of the messages, then 1013.
    seen = 0
    while True:
        opcode, payload = slow.recv_frame(timeout=10)
        if opcode == CLOSE:
            assert len(payload) >= 2
            assert int.from_bytes(payload[:2], "big") == 1013
            break
        assert opcode == TEXT, f"unexpected frame {opcode:#x}"
        frame = json.loads(payload)
        assert frame == publisher.sent(room, [seen, pad])
        seen += 1
    assert seen < count, "the slow consumer was never cut off"
    publisher.assert_alive()


def test_server_sends_pings_and_a_ponging_client_stays(shared_app, raw_ws):
    app = shared_app(**KEEPALIVE)
    _, _, ws = raw_ws(app)
    pings = 0
    # A fixed span proves the connection is NOT closed: 1.5 s is seven ping
    # intervals and three ping timeouts.
    end = time.monotonic() + 1.5
    while (remaining := end - time.monotonic()) > 0:
        try:
            opcode, payload = ws.recv_frame(remaining)
        except TimeoutError:
            break
        assert opcode == PING, f"unexpected frame {opcode:#x}"
        pings += 1
        ws.send_frame(PONG, payload)
    assert pings >= 3
    ws.send_text('{"type": "ping"}')
    assert ws.recv_json() == {"type": "pong"}


class IdleCuttingProxy:
    """A TCP proxy that, like Heroku's router (55 s each way), cuts a connection
    as soon as either direction has carried nothing for ``idle`` seconds."""

    def __init__(self, target_port: int, idle: float):
        self.target_port = target_port
        self.idle = idle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(
                target=self._pump, args=(downstream, upstream), daemon=True
            ).start()

    def _pump(self, downstream: socket.socket, upstream: socket.socket) -> None:
        peer = {downstream: upstream, upstream: downstream}
        last_bytes_from = dict.fromkeys(peer, time.monotonic())
        with selectors.DefaultSelector() as selector:
            for sock in peer:
                selector.register(sock, selectors.EVENT_READ)
            while all(
                time.monotonic() - t < self.idle for t in last_bytes_from.values()
            ):
                for key, _ in selector.select(timeout=0.02):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)  # registered above
                    try:
                        data = ready.recv(65536)
                        peer[ready].sendall(data)
                    except OSError:
                        data = b""
                    if not data:
                        last_bytes_from.clear()  # one side closed: close both
                        break
                    last_bytes_from[ready] = time.monotonic()
                if not last_bytes_from:
                    break
        for sock in peer:
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_pings_keep_a_connection_open_through_an_idle_cutting_proxy(
    shared_app, ws_client
):
    app = shared_app(**KEEPALIVE)
    proxy = IdleCuttingProxy(app.port, idle=0.6)
    try:
        # Control: a connection carrying nothing is cut.
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as silent:
            assert silent.recv(1) == b""
        client = ws_client(proxy)
        # Three idle windows without a message: only Pings and Pongs flow.
        client.assert_quiet(1.8)
        client.assert_alive()
    finally:
        proxy.close()


def test_client_that_never_pongs_is_closed(shared_app, raw_ws, ws_client):
    app = shared_app(**KEEPALIVE)
    _, _, ws = raw_ws(app)
    started = time.monotonic()
    pings = 0
    while True:
        try:
            opcode, _ = ws.recv_frame(
                timeout=0.2 + 0.5 + 5 - (time.monotonic() - started)
            )
        except EOFError:
            break
        except TimeoutError:
            pytest.fail("a client that never answers Pings is still connected")
        if opcode == CLOSE:
            break
        assert opcode == PING, f"unexpected frame {opcode:#x}"
        pings += 1
    assert pings >= 1
    assert time.monotonic() - started >= 0.5, "closed before the Pong was due"
    ws_client(app).assert_alive()
