"""Cached virtual environments, one per requirements file (standard library only).

Named and built exactly as tests/support.py's ``cached_venv`` does, under
.cache/venvs/<hash> at the repository root, so a bake whose requirements-dev.txt
the bake suite has installed already is not installed again: the hash covers the
requirements file, the files it includes (-r), and the Python; a lock makes
concurrent runs build each venv once; a marker written last means a venv
interrupted halfway is rebuilt, not trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirement_files(path: Path) -> list[Path]:
    found = [path]
    for line in path.read_text().splitlines():
        match = re.match(r"\s*(?:-r|--requirement)[\s=]+(\S+)", line)
        if match:
            found += requirement_files(path.parent / match.group(1))
    return found


def cached_venv(requirements: Path) -> Path:
    """A venv with ``pip install -r requirements`` done; its python."""
    digest = hashlib.sha256(f"{sys.version}\n{sys.base_prefix}\n".encode())
    for path in requirement_files(requirements):
        digest.update(path.read_bytes())
    venv = ROOT / ".cache" / "venvs" / digest.hexdigest()[:16]
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            print(f"bench: installing {requirements} into {venv}", flush=True)
            # The base interpreter, also when this runs inside another venv.
            base = Path(sys.base_prefix) / "bin" / "python3"
            python = str(base if base.exists() else sys.executable)
            check(python, "-m", "venv", venv)
            pip = [venv / "bin" / "python", "-m", "pip", "install", "-qq"]
            check(*pip, "-r", requirements.name, cwd=requirements.parent)
            (venv / ".complete").write_text(requirements.read_text())
    return venv / "bin" / "python"


def check(*command: object, cwd: Path | None = None) -> None:
    """Run a command; on failure stop with its output instead of a traceback."""
    words = [str(part) for part in command]
    done = subprocess.run(words, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        output = (done.stdout + done.stderr)[-4000:]
        sys.exit(f"bench: `{' '.join(words)}` failed ({done.returncode}):\n{output}")
