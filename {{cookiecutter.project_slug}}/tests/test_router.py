"""Heroku's router, played by HAProxy with its idle window scaled down to 2 s.

The router cuts a WebSocket that carries nothing for 55 s. HAProxy in HTTP mode
parses the upgrade as the router does, then treats the connection as a tunnel and
cuts it after ``timeout tunnel`` of silence. The app's Pings (and the client's
automatic Pongs) must keep an idle connection open through it; a ping interval
longer than the window must not, or the test could not fail.

HAProxy restarts its window on traffic either way, while the router times each
direction (H15, H28). Here the client sends nothing but Pongs, each right after a
Ping, so both directions are silent together and the two rules agree.
"""

import os
import shutil
import subprocess
import time
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import free_port, port_open
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection

# Heroku's 55 s idle window, scaled down so a test sees it five times over in 10 s.
TUNNEL_SECONDS = 2
# The number: five windows without a single application message.
IDLE_SECONDS = 10
# Pings well inside the window; the Pong is due long before the next Ping.
KEEPALIVE = {"WS_PING_INTERVAL": "0.5", "WS_PING_TIMEOUT": "1"}
# The control: the first Ping would come after 5 s, long after the window closed.
TOO_SLOW = {"WS_PING_INTERVAL": "5", "WS_PING_TIMEOUT": "5"}
# A busy 2-core CI machine can delay HAProxy's timer or our read by a second or so;
# still below the 5 s at which the control's first Ping would reset the window.
CUT_MARGIN = 2

HAPROXY_CONFIG = """\
global
    # Each proxied WebSocket holds two descriptors: 1000 is far more than a test
    # opens, and 2 x 1000 stays far under the file limit (20,000 here); haproxy
    # will not start when the limit cannot hold 2 x maxconn.
    maxconn 1000
    # No log line: nothing here to read, and no syslog socket on a CI runner.

defaults
    # HTTP mode, as Heroku's router: the upgrade request is parsed and forwarded
    # as HTTP, then the connection becomes a two-way tunnel.
    mode http
    # The app listens on loopback: a connect succeeds at once; this bounds a dead one.
    timeout connect 5s
    # Until the upgrade is answered: Heroku waits 30 s for a response (H12).
    timeout client 30s
    timeout server 30s
    # After the upgrade: Heroku's 55 s idle window, scaled down.
    timeout tunnel {tunnel_ms}ms

frontend router
    bind 127.0.0.1:{port}
    default_backend dyno

backend dyno
    server web 127.0.0.1:{app_port}
"""


def haproxy_binary() -> str:
    # Debian installs it in /usr/sbin, which a non-root PATH often lacks.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which("haproxy", path=path)
    if not found:
        pytest.fail(
            "haproxy is not installed; it stands in for Heroku's router: "
            "`apt-get install -y haproxy` (Debian/Ubuntu) or `brew install haproxy` "
            "(macOS)"
        )
    return found


class Router:
    """HAProxy in front of one app; ``url()`` is what a client connects to."""

    def __init__(self, app_port: int, directory: Path, tunnel: float):
        self.port = free_port()
        config = directory / f"haproxy-{self.port}.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(
                tunnel_ms=round(tunnel * 1000), port=self.port, app_port=app_port
            )
        )
        self.log_path = directory / f"haproxy-{self.port}.log"
        with self.log_path.open("wb") as log:
            # -db: stay in the foreground, so the test owns the process.
            self.process = subprocess.Popen(
                [haproxy_binary(), "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, wait_until) -> None:
        def ready():
            if self.process.poll() is not None:
                pytest.fail(f"haproxy exited at start:\n{self.log()}")
            return port_open(self.port)

        # haproxy binds within milliseconds; 10 s allows for a loaded machine.
        wait_until(ready, 10, f"haproxy to listen on port {self.port}")

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                # SIGTERM makes haproxy stop at once; 5 s is generous.
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def router(tmp_path, wait_until):
    """``router(app)``: HAProxy in front of ``app``, listening; stopped at teardown."""
    routers = []

    def start(app) -> Router:
        proxy = Router(app.port, tmp_path, TUNNEL_SECONDS)
        routers.append(proxy)
        proxy.wait_listening(wait_until)
        return proxy

    yield start
    for proxy in routers:
        proxy.stop()


class PingCountingConnection(ClientConnection):
    """The suite's client connection, noting when each Ping from the server arrives
    (the library still answers every Ping with a Pong by itself)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pings: list[float] = []

    def process_event(self, event) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings.append(time.monotonic())
        super().process_event(event)


@pytest.mark.slow
def test_pings_keep_an_idle_connection_open_through_the_router(
    start_app, router, ws_client, new_room, record_property
):
    """With Pings every 0.5 s, a connection idle for 10 s behind a 2 s idle window
    is still open and still delivers."""
    app = start_app(**KEEPALIVE)
    proxy = router(app)
    client = ws_client(proxy, create_connection=PingCountingConnection)
    room = new_room()
    client.join(room)
    idle_since = time.monotonic()

    # Proves both that nothing but Pings and Pongs flowed and that the router did
    # not cut the connection (a close here fails with that message).
    client.assert_quiet(IDLE_SECONDS)
    pings = [t - idle_since for t in client.ws.pings if t >= idle_since]
    client.publish(room, "still here")
    assert client.message() == client.sent(room, "still here")
    alive = time.monotonic() - idle_since

    assert pings, "no Ping crossed the router, yet the connection stayed open"
    silences = [b - a for a, b in pairwise([0.0, *pings, IDLE_SECONDS])]
    record_property("idle connection alive through the router (s)", round(alive, 1))
    record_property("router idle window (s)", TUNNEL_SECONDS)
    record_property("server Pings seen while idle", len(pings))
    record_property("longest silence while idle (s)", round(max(silences), 2))


@pytest.mark.slow
def test_router_cuts_a_connection_whose_pings_are_too_far_apart(
    start_app, router, ws_client, new_room, wait_until, record_property
):
    """The control: with Pings every 5 s, the router cuts the idle connection once
    its 2 s window passes. The cut is the router's: TCP closes with no close frame
    (the app would send one), and the app sees its side dropped too."""
    app = start_app(**TOO_SLOW)
    proxy = router(app)
    client = ws_client(proxy)
    room = new_room()
    client.join(room)
    idle_since = time.monotonic()

    code = client.close_code(timeout=TUNNEL_SECONDS + CUT_MARGIN)
    cut_after = time.monotonic() - idle_since

    assert code is None, f"the app closed the connection itself with {code}"
    # Not refused or dropped at once: the router waited out its idle window.
    assert cut_after > TUNNEL_SECONDS / 2, f"cut after only {cut_after:.2f} s"
    # HAProxy closes the server side too, as the router does: the app frees it
    # (at once on loopback; 5 s allows for a loaded machine).
    wait_until(lambda: app.connections() == 0, 5, "the app to see its side dropped")
    record_property("cut by the router with 5 s Pings (s)", round(cut_after, 2))
