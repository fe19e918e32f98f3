"""HAProxy as the stand-in for Heroku's router: HTTP mode, an idle window of the
test's choosing (``timeout tunnel``), and X-Forwarded-For as the router sends it.
The ``router`` fixture (conftest.py) starts one in front of an app."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import free_port, port_open

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
    # As the router does, the address it saw goes to the app in X-Forwarded-For,
    # after any the client sent itself (HAProxy adds a header line of its own).
    option forwardfor
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
