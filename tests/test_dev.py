"""dev.py: venvs are reused without pip, and `demo` serves the app until Ctrl-C."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest
from support import ROOT, require_redis

import tooling


def test_second_run_makes_no_pip_call(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    calls = []

    def fake_run(*command: object, cwd: object = None) -> None:
        calls.append(" ".join(map(str, command[1:3])))
        if command[1:3] == ("-m", "venv"):  # with --clear
            shutil.rmtree(venv, ignore_errors=True)
            (venv / "bin").mkdir(parents=True)
            (venv / "bin" / "python").touch()

    monkeypatch.setattr(tooling, "run", fake_run)
    tooling.ensure_venv(venv, ["tool==1"], fingerprint="tool==1")
    assert calls == ["-m venv", "-m pip"]
    calls.clear()
    tooling.ensure_venv(venv, ["tool==1"], fingerprint="tool==1")
    assert calls == []
    tooling.ensure_venv(venv, ["tool==2"], fingerprint="tool==2")
    assert calls == ["-m pip"]
    calls.clear()
    # Another requirement set installed earlier into the same venv stays valid.
    tooling.ensure_venv(venv, ["tool==1"], fingerprint="tool==1")
    assert calls == []
    # Made by another Python: rebuilt, and every set installed again.
    (venv / ".dev-python").write_text("Python 2.7\n")
    tooling.ensure_venv(venv, ["tool==1"], fingerprint="tool==1")
    assert calls == ["-m venv", "-m pip"]


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as response:
        found: dict[str, Any] = json.load(response)
        return found


@pytest.fixture
def broker_env(request, tmp_path):
    """The demo's environment: no REDIS_URL (memory), or a redis-server of the
    test's own; AUTH_SECRET unset either way, as on a fresh machine."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "AUTH_SECRET")
    }
    if request.param == "memory":
        yield env
        return
    require_redis()
    port = tooling.free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port)]
        + ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield {**env, "REDIS_URL": f"redis://127.0.0.1:{port}"}
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("broker_env", ["memory", "redis"], indirect=True)
def test_demo_serves_on_port_8000_and_stops_on_ctrl_c(tmp_path, broker_env):
    """The Quick start's first command, with the memory broker, and with Redis
    when REDIS_URL is set (the demo then makes the key Redis needs)."""
    with socket.socket() as probe:
        busy = probe.connect_ex(("127.0.0.1", 8000)) == 0
    assert not busy, "port 8000 is busy: stop whatever runs there (a demo?)"
    # A copy of the template, so the test leaves this checkout's build/ alone.
    copy = tmp_path / "template"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", ".cache", "__pycache__", "*_cache"
        ),
    )
    env = broker_env
    log = tmp_path / "demo.log"
    with open(log, "w") as output:
        demo = subprocess.Popen(
            [sys.executable, "dev.py", "demo"],
            cwd=copy,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        health = None
        deadline = time.monotonic() + 540  # first run: two venvs to install
        while health is None and demo.poll() is None and time.monotonic() < deadline:
            try:
                health = get_json("http://127.0.0.1:8000/healthz")
            except OSError:
                time.sleep(0.5)  # polling until the app answers, not a fixed wait
        assert health is not None, log.read_text()[-4000:]
        assert health["broker"] == ("redis" if "REDIS_URL" in env else "memory")
        assert "http://localhost:8000" in log.read_text()
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        # Past dev.py's own 30 s before SIGKILL: an app slow to stop makes dev.py
        # fail here with its status, instead of the test killing dev.py and
        # leaving the app on port 8000 for the next test.
        assert demo.wait(timeout=40) == 0, log.read_text()[-4000:]
    finally:
        if demo.poll() is None:  # failed above: dev.py stops the app on SIGINT
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 8000)) != 0, "the app outlived dev.py"
