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

import time
from itertools import pairwise

import pytest
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
    proxy = router(app, TUNNEL_SECONDS)
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
    proxy = router(app, TUNNEL_SECONDS)
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
