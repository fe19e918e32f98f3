"""The demo page's client, in headless Chromium against a baked app on a real port.

The page is the contract's "Demo page client": it asks once for a display name
in #name (kept in the browser), gets a guest token from POST /token, connects,
authenticates, shows its state in #status, publishes from #send, lists messages
with their sender's name in #messages, refreshes its token before it expires,
and reconnects after any close with jittered exponential backoff (0.5 s doubling
to 30 s, reset on success; after 4401 with a new token), rejoining its room,
also on another process of the app behind the same host (as a stopped dyno's
clients land on another). Debian's chromium is driven through Playwright
(`playwright install` cannot download browsers here).
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
from typing import Any

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
# One key for every process that shares a Redis: a token from one is good on all.
AUTH_SECRET = "demo-page-tests-" + "k" * 32
# The server's leeway past a token's exp before it closes with 4401 (tokens.py).
LEEWAY = 5
# Run before the page's own scripts: notes each text #status shows, how many
# WebSockets the page opened and each one's close code, and how many guest
# tokens POST /token handed out.
TRACE = """
window.__states = [];
window.__sockets = 0;
window.__closes = [];
window.__tokens = 0;
new MutationObserver(() => {
    const shown = document.getElementById("status")?.textContent;
    const states = window.__states;
    if (shown !== undefined && shown !== states.at(-1)) states.push(shown);
}).observe(document, { subtree: true, childList: true, characterData: true });
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
        super(...args);
        window.__sockets += 1;
        this.addEventListener("close", (event) => window.__closes.push(event.code));
    }
};
const nativeFetch = window.fetch;
window.fetch = async (...args) => {
    const answer = await nativeFetch(...args);
    if (String(args[0]).endsWith("/token") && answer.ok) window.__tokens += 1;
    return answer;
};
"""


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


def open_page(browser, port: int, room: str, name: str = "tester", trace=False):
    """A new browser context on the page, the name given in its #name form."""
    page = browser.new_page()
    if trace:
        page.add_init_script(TRACE)
    page.goto(f"http://127.0.0.1:{port}/?room={room}")
    page.fill("#name-input", name)
    page.press("#name-input", "Enter")
    return page


def expect_status(page, state: str, timeout: float = 10) -> None:
    page.wait_for_function(
        "state => document.querySelector('#status').textContent === state",
        arg=state,
        timeout=timeout * 1000,
    )


def expect_message(
    page, text: str, count: int, sender: str = "", timeout: float = 5
) -> None:
    """#messages holds `count` children and the last one shows `text` (and the
    sender's name, when given)."""
    page.wait_for_function(
        """([text, sender, count]) => {
            const items = document.querySelector('#messages').children;
            const shown = items.length ? items[items.length - 1].textContent : '';
            return items.length === count
                && shown.includes(text) && shown.includes(sender);
        }""",
        arg=[text, sender, count],
        timeout=timeout * 1000,
    )


def last_sender(page) -> str | None:
    """The user id the server put in `from` of the last message shown."""
    found = page.eval_on_selector(
        "#messages > :last-child", "item => item.dataset.userId ?? null"
    )
    return None if found is None else str(found)


def kept_guest(page) -> dict[str, Any]:
    """The guest {token, user} the page keeps in localStorage."""
    kept: dict[str, Any] = page.evaluate(
        "JSON.parse(localStorage.getItem('realtime-demo.guest') || '{}')"
    )
    return kept


def traced(page, what: str):
    return page.evaluate(f"window.__{what}")


def say(page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def test_pages_talk_and_rejoin_after_a_restart(browser, demo):
    alice = open_page(browser, demo.port, "browser-talk", "Alice")
    bob = open_page(browser, demo.port, "browser-talk", "Bob")
    elsewhere = open_page(browser, demo.port, "browser-elsewhere", "Eve")
    for page in (alice, bob, elsewhere):
        expect_status(page, "connected")

    say(alice, "hello from alice")
    for page in (alice, bob):
        expect_message(page, "hello from alice", 1, sender="Alice")
    assert alice.input_value("#message") == "", "the field is cleared after sending"

    # A deploy: SIGTERM closes every socket, the pages notice and come back.
    demo.stop()
    for page in (alice, bob):
        expect_status(page, "reconnecting")
    demo.start()
    for page in (alice, bob):
        expect_status(page, "connected")

    # The restarted process signs with a new random key (no AUTH_SECRET): the
    # pages' kept tokens are refused, so they got new ones for the same names.
    say(bob, "back again")
    for page in (alice, bob):
        expect_message(page, "back again", 2, sender="Bob")
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
    for server in (first, second):
        server.env |= {"REDIS_URL": redis_url, "AUTH_SECRET": AUTH_SECRET}
    second.env["WS_MAX_CONNECTIONS"] = str(SECOND_SLOTS)
    front = Front([first.port, second.port])
    pages = []
    try:
        first.start()
        second.start()
        alice = open_page(browser, front.port, room, "Alice", trace=True)
        bob = open_page(browser, second.port, room, "Bob")
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

        # A member of its room again, with the token the first process issued (one
        # AUTH_SECRET): bob's message, via the second process, arrives.
        say(bob, "after the restart")
        for page in (alice, bob):
            expect_message(page, "after the restart", 2)
        assert traced(alice, "tokens") == 1, "the kept token served the second process"
    finally:
        for page in pages:
            page.close()
        front.close()
        second.stop()
        first.stop()


def test_name_is_kept_and_can_be_changed(browser, demo):
    """Asked once: a reload connects without asking, as the same guest. A new name
    takes effect on the open connection (a refresh), under the same id."""
    page = open_page(browser, demo.port, "browser-name", "Dora")
    expect_status(page, "connected")
    say(page, "first visit")
    expect_message(page, "first visit", 1, sender="Dora")
    guest = last_sender(page)
    assert guest and guest.startswith("guest-"), guest

    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.reload()
    expect_status(page, "connected")
    assert page.locator("#name").is_hidden(), "a kept name is not asked again"
    # [history] The page opens with the room's recent messages: the first visit's.
    expect_message(page, "first visit", 1, sender="Dora")
    say(page, "came back")
    expect_message(page, "came back", 2, sender="Dora")
    assert last_sender(page) == guest, "the kept guest token kept the id"

    page.click("#rename")
    page.fill("#name-input", "Dora Renamed")
    page.press("#name-input", "Enter")
    page.wait_for_function(
        "document.querySelector('#me-name').textContent === 'Dora Renamed'"
    )
    say(page, "new name")
    expect_message(page, "new name", 3, sender="Dora Renamed")
    assert last_sender(page) == guest
    assert len(sockets) == 1, "the name changed without a reconnect"
    page.close()


@pytest.fixture
def two_processes(baked_demo: tuple[Path, Path], redis_url):
    """Two processes of the demo on one Redis and one AUTH_SECRET, as two dynos
    are; stopped at teardown."""
    servers = [Server(*baked_demo, free_port()) for _ in range(2)]
    try:
        for server in servers:
            server.env |= {"REDIS_URL": redis_url, "AUTH_SECRET": AUTH_SECRET}
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_two_names_on_two_processes_sharing_redis(browser, two_processes):
    """Each page signs in on its own process; the server puts each sender's name
    and id on the message, and Redis carries it to the other process."""
    room = f"browser-names-{uuid.uuid4().hex[:8]}"
    servers = two_processes
    pages = []
    try:
        ada = open_page(browser, servers[0].port, room, "Ada")
        bo = open_page(browser, servers[1].port, room, "Bo")
        pages += [ada, bo]
        for page in pages:
            expect_status(page, "connected")
        ids = [kept_guest(page)["user"]["id"] for page in pages]
        assert ids[0] != ids[1] and all(i.startswith("guest-") for i in ids), ids

        say(ada, "hello from ada")
        for page in pages:
            expect_message(page, "hello from ada", 1, sender="Ada")
            assert last_sender(page) == ids[0]
        say(bo, "hello from bo")
        for page in pages:
            expect_message(page, "hello from bo", 2, sender="Bo")
            assert last_sender(page) == ids[1]
        assert "Bo" not in ada.locator("#messages > :first-child").inner_text()
    finally:
        for page in pages:
            page.close()


def test_a_page_whose_process_restarts_shows_what_it_missed_once_in_order(
    browser, two_processes
):
    """[history] Page B's process is restarted (a deploy) while page A, on the
    other process, sends 20 messages: B rejoins with since and shows all 20, each
    once, in order."""
    room = f"browser-recovery-{uuid.uuid4().hex[:8]}"
    servers = two_processes
    pages = []
    try:
        a = open_page(browser, servers[0].port, room, "Ann")
        b = open_page(browser, servers[1].port, room, "Ben")
        pages += [a, b]
        for page in pages:
            expect_status(page, "connected")
        say(a, "before")
        for page in pages:
            expect_message(page, "before", 1, sender="Ann")
        servers[1].stop()
        expect_status(b, "reconnecting")
        sent = [f"missed {n}" for n in range(1, 21)]
        for n, text in enumerate(sent, start=2):
            say(a, text)
            expect_message(a, text, n, sender="Ann")
        servers[1].start()
        expect_status(b, "connected", timeout=30)
        expect_message(b, sent[-1], 21, sender="Ann")
        shown = b.eval_on_selector_all(
            "#messages > *", "items => items.map(item => item.textContent)"
        )
        assert [text for text in sent if any(text in item for item in shown)] == sent
        order = [
            next(i for i, item in enumerate(shown) if text in item) for text in sent
        ]
        assert order == sorted(order) and len(shown) == 21, shown
        assert "could not be recovered" not in b.inner_text("body")
    finally:
        for page in pages:
            page.close()


def test_page_refreshes_a_short_lived_token_in_place(
    browser, baked_demo: tuple[Path, Path]
):
    """Guest tokens of 3 s: the page refreshes on its open socket before each
    expires, so the server never closes it (4401 would come 5 s past exp), and it
    stays connected, in its room, as the same guest."""
    server = Server(*baked_demo, free_port())
    server.env["AUTH_GUEST_TTL"] = "3"
    server.start()
    try:
        page = open_page(browser, server.port, "browser-refresh", "Rita", trace=True)
        expect_status(page, "connected")
        connected = time.monotonic()
        say(page, "before the refreshes")
        expect_message(page, "before the refreshes", 1, sender="Rita")
        guest = last_sender(page)

        # Five new tokens, each presented with a refresh on the same socket.
        page.wait_for_function("window.__tokens >= 6", timeout=30_000)
        # Past the first token's exp + leeway (+ 1 s for the server's close) with
        # no close: a fixed pause, since it proves an absence.
        left = connected + 3 + LEEWAY + 1 - time.monotonic()
        if left > 0:
            page.wait_for_timeout(left * 1000)
        say(page, "after the refreshes")
        expect_message(page, "after the refreshes", 2, sender="Rita")
        assert last_sender(page) == guest
        assert traced(page, "closes") == []
        assert "reconnecting" not in traced(page, "states"), traced(page, "states")
        assert traced(page, "sockets") == 1
        assert page.locator("#status").text_content() == "connected"
        page.close()
    finally:
        server.stop()


def test_page_gets_a_new_token_after_4401(browser, baked_demo: tuple[Path, Path]):
    """POST /token fails from before the page's refresh is due, so the token
    expires and the server closes with 4401. Once the endpoint answers again the
    page gets a new token (presenting the expired one, so the same guest) and is
    back in its room without the user doing anything."""
    ttl = 12  # the old token is still good as Bearer up to AUTH_GUEST_TTL past exp
    server = Server(*baked_demo, free_port())
    server.env["AUTH_GUEST_TTL"] = str(ttl)
    server.start()
    blocked = {"on": False, "aborted": 0}

    def token_route(route) -> None:
        if blocked["on"] and route.request.method == "POST":
            blocked["aborted"] += 1
            route.abort()
        else:
            route.continue_()

    try:
        page = browser.new_page()
        page.add_init_script(TRACE)
        page.route("**/token", token_route)
        page.goto(f"http://127.0.0.1:{server.port}/?room=browser-4401")
        page.fill("#name-input", "Cleo")
        page.press("#name-input", "Enter")
        expect_status(page, "connected")
        say(page, "before the expiry")
        expect_message(page, "before the expiry", 1, sender="Cleo")
        guest = last_sender(page)

        blocked["on"] = True
        page.wait_for_function(
            "window.__closes.includes(4401)", timeout=(ttl + LEEWAY + 5) * 1000
        )
        assert blocked["aborted"] >= 1, "the page tried to refresh before the expiry"
        assert traced(page, "closes") == [4401]
        assert traced(page, "tokens") == 1
        expect_status(page, "reconnecting")

        blocked["on"] = False
        expect_status(page, "connected")
        # Asked first, not after trying the expired one: one socket more, no close.
        assert traced(page, "tokens") == 2, "a new token after the 4401"
        assert traced(page, "sockets") == 2
        assert traced(page, "closes") == [4401]
        say(page, "after the expiry")
        expect_message(page, "after the expiry", 2, sender="Cleo")
        assert last_sender(page) == guest
        page.close()
    finally:
        server.stop()


def test_page_asks_for_a_new_token_after_a_sign_in_timeout(
    browser, baked_demo: tuple[Path, Path]
):
    """4401 also closes a connection that did not authenticate in AUTH_TIMEOUT.
    The page's first auth frame is held back, so its fresh token is never seen;
    after the 4401 the page still asks for a new token before reconnecting,
    which then goes through untouched."""
    server = Server(*baked_demo, free_port())
    server.env["AUTH_TIMEOUT"] = "1"
    server.start()
    held: list[object] = []

    def hold_first_auth(ws) -> None:
        upstream = ws.connect_to_server()
        first = not held

        def forward(message) -> None:
            if first and '"auth"' in str(message):
                held.append(message)
            else:
                upstream.send(message)

        ws.on_message(forward)
        upstream.on_message(lambda message: ws.send(message))

    try:
        page = browser.new_page()
        page.add_init_script(TRACE)
        page.route_web_socket("**/ws", hold_first_auth)
        page.goto(f"http://127.0.0.1:{server.port}/?room=browser-timeout")
        page.fill("#name-input", "Tim")
        page.press("#name-input", "Enter")
        page.wait_for_function("window.__closes.includes(4401)", timeout=10_000)
        assert len(held) == 1
        expect_status(page, "connected")
        assert traced(page, "tokens") == 2, "a new token after the 4401"
        assert traced(page, "sockets") == 2
        assert traced(page, "closes") == [4401]
        say(page, "signed in")
        expect_message(page, "signed in", 1, sender="Tim")
        page.close()
    finally:
        server.stop()
