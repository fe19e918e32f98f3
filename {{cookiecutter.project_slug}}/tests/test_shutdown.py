"""SIGTERM, as Heroku sends it at every restart: close clients, exit 0 in time."""

import json
import os
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_token

# Heroku sends SIGKILL 30 s after SIGTERM; the contract asks for 25 s.
SHUTDOWN_SECONDS = 25
SHUTDOWN_WORDS = re.compile(r"shut|stop|terminat|sigterm|exit|clos", re.IGNORECASE)
# The contract: under load, every client has its close frame within 2 s of SIGTERM.
CLOSE_SECONDS = 2
# 1,000 clients in two processes of 500: neither this process nor one client event
# loop is the bottleneck, and each stays far below the 20,000 file limit.
LOAD_PROCESSES = 2
LOAD_PER_PROCESS = 500
# Every second client joins one of these rooms: 50 members each.
LOAD_ROOMS = 10
# 1,000 handshakes and 500 joins take a few seconds; generous on a busy machine.
CONNECT_SECONDS = 60
# Once the app has exited, its connections are gone and the clients report at once.
REPORT_SECONDS = 10


def shut_down(app, clients, raw_clients=()):
    """SIGTERM the app; the close codes its clients got, and its exit status."""
    log_before = len(app.log())
    started = time.monotonic()
    app.sigterm()
    codes = [client.close_code(timeout=SHUTDOWN_SECONDS) for client in clients]
    codes += [raw.close_code(timeout=SHUTDOWN_SECONDS) for raw in raw_clients]
    try:
        status = app.wait(max(SHUTDOWN_SECONDS - (time.monotonic() - started), 0.1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {SHUTDOWN_SECONDS} s after SIGTERM:\n{app.log()}")
    log_after = app.log()[log_before:]
    assert SHUTDOWN_WORDS.search(log_after), (
        f"nothing logged about shutting down:\n{log_after}"
    )
    return codes, status


@pytest.mark.slow
def test_sigterm_closes_websockets_and_exits_zero(
    start_app, ws_client, raw_ws, new_room
):
    """SIGTERM: members and idle clients get 1001 or 1012, a client that never
    answers the close handshake does not hold up the exit, and the exit is 0."""
    app = start_app()
    room = new_room()
    member, idle = ws_client(app), ws_client(app)
    member.join(room)
    # A client that reads but never answers the close handshake must not hold up
    # the exit.
    _, _, mute = raw_ws(app)
    codes, status = shut_down(app, [member, idle], [mute])
    assert all(code in (1001, 1012) for code in codes), codes
    assert status == 0


def test_no_new_websocket_after_sigterm(start_app, ws_client, raw_ws):
    app = start_app()
    client = ws_client(app)
    app.sigterm()
    assert client.close_code(timeout=SHUTDOWN_SECONDS) in (1001, 1012)
    # The server is shutting down: a new handshake is refused one way or another.
    try:
        status, _, _ = raw_ws(app)
    except OSError:
        pass  # the port is closed already, or the connection dropped unanswered
    else:
        assert status == 503
    assert app.wait(SHUTDOWN_SECONDS) == 0


def test_sigterm_on_redis_releases_the_broker_and_exits_zero(
    start_app, redis_server, ws_client, new_room
):
    app = start_app(redis_server)
    room = new_room()
    member = ws_client(app)
    member.join(room)
    codes, status = shut_down(app, [member])
    assert codes[0] in (1001, 1012)
    assert status == 0


class LoadClients:
    """One ``load_clients.py`` process; a thread reads its JSON lines."""

    def __init__(self, url: str, count: int, rooms: list[str]) -> None:
        script = Path(__file__).with_name("load_clients.py")
        self.process = subprocess.Popen(
            [sys.executable, str(script), url, str(count), *rooms],
            # One user for them all, as one person's many tabs.
            env={**os.environ, "LOAD_TOKEN": make_token("load")},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None  # stdout=PIPE
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)  # the process ended

    def next(self, timeout: float, what: str) -> dict:
        try:
            line = self.lines.get(timeout=max(timeout, 0))
        except queue.Empty:
            pytest.fail(f"no {what} from the load clients within {timeout:.0f} s")
        if line is None:
            code = self.process.wait()
            pytest.fail(f"the load clients exited with {code} before their {what}")
        if "error" in line:
            pytest.fail(f"the load clients failed: {line['error']}")
        return line

    def closes(self) -> list[list]:
        """Per connection, [close code, arrival time] or nulls if none came."""
        try:
            line = self.lines.get(timeout=REPORT_SECONDS)
        except queue.Empty:
            self.give_up()  # some connection is still open: report what came
            return self.next(REPORT_SECONDS, "close report")["closes"]
        if line is None or "closes" not in line:
            pytest.fail(f"no close report from the load clients: {line}")
        return line["closes"]

    def give_up(self) -> None:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()

    def stop(self) -> None:
        self.give_up()
        try:
            self.process.wait(REPORT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.mark.slow
def test_sigterm_under_load_closes_1000_clients_within_2_s(
    start_app, redis_server, new_room, record_property
):
    """1,000 clients, half of them room members on Redis: after SIGTERM each has
    1001 or 1012 within 2 s, and the process exits 0 within 25 s."""
    clients = LOAD_PROCESSES * LOAD_PER_PROCESS
    # Every client is on 127.0.0.1: one client address.
    app = start_app(redis_server, WS_MAX_CONNECTIONS_PER_CLIENT=str(clients))
    rooms = [new_room() for _ in range(LOAD_ROOMS)]
    started = time.monotonic()
    groups = [
        LoadClients(app.url(), LOAD_PER_PROCESS, rooms) for _ in range(LOAD_PROCESSES)
    ]
    try:
        for group in groups:
            remaining = CONNECT_SECONDS - (time.monotonic() - started)
            group.next(remaining, "readiness")
        connected = time.monotonic() - started
        record_property("connect 1,000 clients (s)", round(connected, 2))
        assert app.connections() == clients

        sigterm = time.monotonic()
        app.sigterm()
        try:
            status = app.wait(SHUTDOWN_SECONDS)
        except subprocess.TimeoutExpired:
            status = None
        exited = time.monotonic() - sigterm
        closes = [close for group in groups for close in group.closes()]
    finally:
        for group in groups:
            group.stop()

    codes = Counter(code for code, _ in closes)
    delays = sorted(at - sigterm for _, at in closes if at is not None)
    record_property("clients", len(closes))
    # None: no close frame came (the connection dropped, or is still open).
    seen = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items(), key=str))
    record_property("close codes seen", seen)
    if delays:
        record_property("last close after SIGTERM (s)", round(delays[-1], 3))
        record_property("p50 close (s)", round(statistics.median(delays), 3))
    if status is not None:
        record_property("exit after SIGTERM (s)", round(exited, 2))

    assert status is not None, (
        f"still running {SHUTDOWN_SECONDS} s after SIGTERM:\n{app.log()[-3000:]}"
    )
    assert len(closes) == clients
    assert set(codes) <= {1001, 1012}, f"close codes: {seen}"
    assert delays[-1] <= CLOSE_SECONDS, (
        f"the last close frame came {delays[-1]:.2f} s after SIGTERM; "
        f"p50 {statistics.median(delays):.2f} s"
    )
    assert status == 0
