"""The demo page's client, in headless Chromium against a baked app on a real port.

The page is the contract's "Demo page client": it connects, shows its state in
#status, publishes from #send, lists messages in #messages, and reconnects after
any close with jittered exponential backoff (0.5 s doubling to 30 s, reset on
success), rejoining its room, also on another process of the app behind the same
host (as a stopped dyno's clients land on another). Debian's chromium is driven
through Playwright (`playwright install` cannot download browsers here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from itertools import pairwise
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from support import bake, cached_venv, require_redis, venv_env

from tooling import free_port, web_command

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The page waits [ceiling / 2, ceiling] before attempt k, ceiling = 0.5 s * 2**k.
FIRST_DELAY = 0.5
# Slack for timers, process start and a refused handshake on a loaded machine.
SLACK = 0.4
# The failover test's second process takes two WebSockets; two other pages hold
# them, so the page's first attempts there are refused (503), as by a full dyno.
SECOND_SLOTS = 2
# Attempts refused before a slot is freed: three waits of the doubling backoff.
REFUSED = 3


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "no chromium on PATH: apt-get install -y chromium"
    return found


def wait_for_port(
    port: int, process: subprocess.Popen[bytes], timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the app exited at start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)  # polling for the port, not waiting out an event
    pytest.fail(f"the app did not listen on {port} within {timeout} s")


class Server:
    """The bake's Procfile `web:` line, started and stopped as Heroku would."""

    def __init__(self, project: Path, python: Path, port: int) -> None:
        self.command = web_command(project)
        self.project = project
        self.env = venv_env(python) | {"PORT": str(port)}
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {self.command}"],
            cwd=self.project,
            env=self.env,
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(25) == 0


class Proxy:
    """A TCP proxy in front of the app, through which the page is loaded. Cutting
    it closes the page's connection at a known instant; while cut, it records
    each connection attempt and drops it before any byte of the handshake, so
    every attempt of the page fails without the WebSocket opening."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.cut_off = False
        self.attempts: list[float] = []
        self.open: list[socket.socket] = []
        self.changed = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            with self.changed:
                if self.cut_off:
                    client.close()
                    self.attempts.append(time.monotonic())
                    self.changed.notify_all()
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
                self.open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, target), daemon=True
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        # OSError: the other direction closed it, or the proxy was cut.
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def cut(self) -> float:
        """Close every proxied connection and refuse new ones; return the instant."""
        with self.changed:
            self.cut_off = True
            self.attempts = []
            for end in self.open:
                # shutdown, not just close: it sends the FIN at once and wakes
                # the pump blocked in recv on this socket.
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            self.open = []
            return time.monotonic()

    def restore(self) -> None:
        with self.changed:
            self.cut_off = False

    def wait_for_attempts(self, count: int, timeout: float) -> list[float]:
        with self.changed:
            ok = self.changed.wait_for(lambda: len(self.attempts) >= count, timeout)
            assert ok, f"{len(self.attempts)} attempts in {timeout} s, wanted {count}"
            return self.attempts[:count]

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.listener.close()


def read_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> bytes:
    """Bytes from sock up to and past ``marker`` (or all of them until EOF)."""
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(limit)
        if not chunk:
            break
        data += chunk
    return data


class Front(Proxy):
    """A TCP front before two app processes, like Heroku's router before two dynos:
    each new connection goes to the first process that accepts it (the first one
    while it listens, else the second). It notes each WebSocket handshake as
    (arrival instant, port it went to, HTTP status of the answer)."""

    def __init__(self, upstreams: list[int]) -> None:
        self.upstreams = upstreams
        self.handshakes: list[tuple[float, int, int]] = []
        super().__init__(upstreams[0])

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            arrived = time.monotonic()
            threading.Thread(
                target=self._route, args=(client, arrived), daemon=True
            ).start()

    def _route(self, client: socket.socket, arrived: float) -> None:
        upstream = None
        # OSError: either side left mid-request (a browser's spare connection).
        try:
            client.settimeout(5)  # a request head arrives at once, or never
            head = read_until(client, b"\r\n\r\n")
            for port in self.upstreams:
                try:
                    upstream = socket.create_connection(("127.0.0.1", port))
                    break
                except ConnectionRefusedError:
                    continue
            else:
                client.close()  # no process listens: the attempt fails
                return
            upstream.settimeout(5)  # the app answers a handshake at once
            upstream.sendall(head)
            answer = read_until(upstream, b"\r\n")
            client.sendall(answer)
        except OSError:
            for end in (client, upstream):
                if end is not None:
                    end.close()
            return
        if head.startswith(b"GET /ws ") and answer.startswith(b"HTTP/1.1 "):
            with self.changed:
                self.handshakes.append((arrived, port, int(answer.split()[1])))
                self.changed.notify_all()
        for end in (client, upstream):
            end.settimeout(None)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(
                target=self._pump, args=(source, target), daemon=True
            ).start()

    def wait_for_handshakes(
        self, since: float, count: int, timeout: float
    ) -> list[tuple[float, int, int]]:
        """The first ``count`` handshakes that arrived after ``since``."""

        def later() -> list[tuple[float, int, int]]:
            return [shake for shake in self.handshakes if shake[0] > since]

        with self.changed:
            ok = self.changed.wait_for(lambda: len(later()) >= count, timeout)
            assert ok, f"handshakes in {timeout} s: {later()}, wanted {count}"
            return later()[:count]


@pytest.fixture(scope="module")
def redis_url():
    """REDIS_URL when set, else a redis-server of this module's own."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    require_redis()
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary, "no redis-server on PATH"
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port)]
        + ["--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def baked_demo(cookies_session) -> tuple[Path, Path]:
    """The default bake and the python of a venv with its requirements."""
    project = bake(cookies_session).project_path
    return project, cached_venv(project / "requirements.txt")


@pytest.fixture(scope="module")
def demo(baked_demo: tuple[Path, Path]):
    server = Server(*baked_demo, free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium(), args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


def open_page(browser, port: int, room: str):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{port}/?room={room}")
    return page


def expect_status(page, state: str, timeout: float = 10) -> None:
    page.wait_for_function(
        "state => document.querySelector('#status').textContent === state",
        arg=state,
        timeout=timeout * 1000,
    )


def expect_message(page, text: str, count: int, timeout: float = 5) -> None:
    """#messages holds `count` children and the last one shows `text`."""
    page.wait_for_function(
        """([text, count]) => {
            const items = document.querySelector('#messages').children;
            return items.length === count
                && items[items.length - 1].textContent.includes(text);
        }""",
        arg=[text, count],
        timeout=timeout * 1000,
    )


def say(page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def test_pages_talk_and_rejoin_after_a_restart(browser, demo):
    alice = open_page(browser, demo.port, "browser-talk")
    bob = open_page(browser, demo.port, "browser-talk")
    elsewhere = open_page(browser, demo.port, "browser-elsewhere")
    for page in (alice, bob, elsewhere):
        expect_status(page, "connected")

    say(alice, "hello from alice")
    for page in (alice, bob):
        expect_message(page, "hello from alice", 1)
    assert alice.input_value("#message") == "", "the field is cleared after sending"

    # A deploy: SIGTERM closes every socket, the pages notice and come back.
    demo.stop()
    for page in (alice, bob):
        expect_status(page, "reconnecting")
    demo.start()
    for page in (alice, bob):
        expect_status(page, "connected")

    say(bob, "back again")
    for page in (alice, bob):
        expect_message(page, "back again", 2)
    # The other room never saw either message.
    assert elsewhere.locator("#messages > *").count() == 0
    for page in (alice, bob, elsewhere):
        page.close()


def test_reconnect_backoff_doubles_with_jitter_and_resets(browser, demo):
    proxy = Proxy(demo.port)
    try:
        page = open_page(browser, proxy.port, "browser-backoff")
        expect_status(page, "connected")

        # Four failed attempts: each waits between half the ceiling and the
        # ceiling, 0.5 s * 2**k, counted from the previous failure.
        closed = proxy.cut()
        attempts = proxy.wait_for_attempts(4, timeout=15)
        expect_status(page, "reconnecting")
        starts = [closed, *attempts]
        waits = [later - earlier for earlier, later in pairwise(starts)]
        for k, waited in enumerate(waits):
            ceiling = FIRST_DELAY * 2**k
            assert ceiling / 2 - 0.05 <= waited <= ceiling + SLACK, (k, waits)

        # The fifth attempt (within 8 s) gets through and rejoins the room.
        proxy.restore()
        expect_status(page, "connected", timeout=8 + SLACK + 2)

        # Success reset the backoff: the first retry again comes within 0.5 s.
        closed = proxy.cut()
        first = proxy.wait_for_attempts(1, timeout=5)[0]
        assert first - closed <= FIRST_DELAY + SLACK
        proxy.restore()
        expect_status(page, "connected")
        page.close()
    finally:
        proxy.close()


def test_page_fails_over_to_a_second_process_with_backoff(
    browser, baked_demo: tuple[Path, Path], redis_url
):
    """Two processes of one bake share Redis behind a front that routes around a
    stopped one. SIGTERM the first: the page backs off (0.5 s jittered, doubling)
    while the second is full, then gets in there and is in its room again."""
    room = f"browser-failover-{uuid.uuid4().hex[:8]}"
    first, second = (Server(*baked_demo, free_port()) for _ in range(2))
    first.env["REDIS_URL"] = second.env["REDIS_URL"] = redis_url
    second.env["WS_MAX_CONNECTIONS"] = str(SECOND_SLOTS)
    front = Front([first.port, second.port])
    pages = []
    try:
        first.start()
        second.start()
        alice = open_page(browser, front.port, room)
        bob = open_page(browser, second.port, room)
        filler = open_page(browser, second.port, f"{room}-filler")
        pages += [alice, bob, filler]
        for page in pages:
            expect_status(page, "connected")
        assert [port for _, port, _ in front.handshakes] == [first.port]
        # One Redis: alice, on the first process, reaches bob on the second.
        say(alice, "before the restart")
        for page in (alice, bob):
            expect_message(page, "before the restart", 1)

        sigterm = time.monotonic()
        first.stop()  # exit 0 within 25 s, or this fails
        expect_status(alice, "reconnecting")
        refused = front.wait_for_handshakes(sigterm, REFUSED, timeout=15)
        assert [(port, status) for _, port, status in refused] == [
            (second.port, 503)
        ] * REFUSED, refused
        filler.close()  # a slot of the second process frees up
        expect_status(alice, "connected", timeout=FIRST_DELAY * 2**REFUSED + 5)
        shakes = front.wait_for_handshakes(sigterm, REFUSED + 1, timeout=1)
        assert shakes[-1][1:] == (second.port, 101), shakes
        assert len([s for s in front.handshakes if s[0] > sigterm]) == REFUSED + 1

        # Each attempt waits between half the ceiling and the ceiling, 0.5 s * 2**k,
        # after the previous failure (the first: after the close that SIGTERM sent).
        starts = [sigterm] + [arrived for arrived, _, _ in shakes]
        waits = [later - earlier for earlier, later in pairwise(starts)]
        for k, waited in enumerate(waits):
            ceiling = FIRST_DELAY * 2**k
            assert ceiling / 2 - 0.05 <= waited <= ceiling + SLACK, (k, waits)

        # A member of its room again: bob's message, via the second process, arrives.
        say(bob, "after the restart")
        for page in (alice, bob):
            expect_message(page, "after the restart", 2)
    finally:
        for page in pages:
            page.close()
        front.close()
        second.stop()
        first.stop()
