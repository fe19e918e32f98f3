"""What the template's own tooling shares: dev.py, the tests and the benchmarks.

The framework choices, a bake's web command, virtual environments (dev.py's and
the cache under .cache/venvs/), the environment of an activated venv, a free
port. Standard library only: dev.py imports it before any venv exists.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
COOKIECUTTER_JSON: dict[str, Any] = json.loads((ROOT / "cookiecutter.json").read_text())
# In the prompt's order, which every table and loop over them follows.
FRAMEWORKS: tuple[str, ...] = tuple(COOKIECUTTER_JSON["framework"])
# A venv is only as good as the Python that made it (an upgrade, a deleted pyenv
# version break it): this names that Python.
PYTHON_IDENTITY = f"{sys.version}\n{sys.base_prefix}\n"


def web_command(project: Path) -> str:
    """The command of the project's one Procfile `web:` line, as Heroku runs it."""
    procfile = project / "Procfile"
    commands = [
        line.removeprefix("web:").strip()
        for line in procfile.read_text().splitlines()
        if line.startswith("web:")
    ]
    if len(commands) != 1:
        raise ValueError(f"{procfile} has {len(commands)} web: lines, not one")
    return commands[0]


def activated(python: Path, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """environ as a shell with python's venv activated has it: `python` and the
    venv's scripts come first on PATH. PYTHONHOME and PYTHONPATH go: set for
    another Python (this one's, an outer pytest's), they would mislead the venv's.
    """
    env = {
        key: value
        for key, value in environ.items()
        if key not in ("PYTHONHOME", "PYTHONPATH")
    }
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_venv(
    venv: Path, pip_args: Sequence[str], fingerprint: str, cwd: Path | None = None
) -> Path:
    """Make `venv` hold what `pip install pip_args` installs (in cwd); its python.

    A stamp file per requirement set (named by the hash of `fingerprint`) records a
    finished install, so the second run makes no pip call at all; an install cut
    short has no stamp and is done again. pip only adds, so the stamps of other
    sets (demo's and test's share .venv) stay true. A venv made by another Python
    is rebuilt.
    """
    python = venv / "bin" / "python"
    identity = venv / ".dev-python"
    made_by = identity.read_text() if identity.exists() else ""
    if not (python.exists() and made_by == PYTHON_IDENTITY):
        print(f"Creating {venv}", flush=True)
        # The base interpreter, also when this runs inside another venv.
        base = Path(sys.base_prefix) / "bin" / "python3"
        run(base if base.exists() else sys.executable, "-m", "venv", "--clear", venv)
        identity.write_text(PYTHON_IDENTITY)
    stamp = venv / f".dev-stamp-{hashlib.sha256(fingerprint.encode()).hexdigest()[:16]}"
    if not stamp.exists():
        print(f"Installing into {venv}: {' '.join(pip_args)}", flush=True)
        # -qq: pip's progress and index warnings are noise here; errors still show.
        run(python, "-m", "pip", "install", "-qq", *pip_args, cwd=cwd)
        stamp.write_text(fingerprint)
    return python


def cached_venv(requirements: Path) -> Path:
    """A venv with `pip install -r requirements` done; its python.

    Shared by the tests and the benchmarks: under .cache/venvs/, named by the hash
    of the requirements file, the files it includes (-r) and the Python, so a
    bake's requirements installed by one are not installed again by the other. A
    lock makes concurrent runs build each venv once.
    """
    digest = hashlib.sha256(PYTHON_IDENTITY.encode())
    for path in requirement_files(requirements):
        digest.update(path.read_bytes())
    name = digest.hexdigest()[:16]
    venv = ROOT / ".cache" / "venvs" / name
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        args = ["-r", requirements.name]
        return ensure_venv(venv, args, fingerprint=name, cwd=requirements.parent)


def requirement_files(path: Path) -> list[Path]:
    """A requirements file and, depth first, those it includes with -r."""
    found = [path]
    for line in path.read_text().splitlines():
        match = re.match(r"\s*(?:-r|--requirement)[\s=]+(\S+)", line)
        if match:
            found += requirement_files(path.parent / match.group(1))
    return found


def run(*command: object, cwd: Path | None = None) -> None:
    """Run a command; on failure stop with one line instead of a traceback."""
    words = [str(part) for part in command]
    returncode = subprocess.run(words, cwd=cwd).returncode
    if returncode:
        sys.exit(f"`{' '.join(words)}` failed (exit {returncode})")
