"""Every variant bakes quickly, fully rendered, lint-clean, pruned and replayable."""

import filecmp
import json
import re

import pytest
from support import (
    COOKIECUTTER_JSON,
    QUESTIONS,
    ROOT,
    answers_of,
    bake,
    cached_venv,
    run_ok,
    text_files,
    tool,
)

# What an unrendered Jinja tag or template variable looks like in a bake.
TEMPLATE_VARIABLES = "|".join(re.escape(key) for key in COOKIECUTTER_JSON)
UNRENDERED = re.compile(
    r"\{\{-?\s*cookiecutter|\{%|"
    rf"\bcookiecutter\.(?:{TEMPLATE_VARIABLES})\b"
)


def test_bake_refuses_an_answer_that_is_not_a_question(cookies):
    with pytest.raises(AssertionError, match="framwork"):
        bake(cookies, framwork="websockets")


@pytest.mark.parametrize(
    "text, unrendered",
    [
        ("{{ cookiecutter.project_slug }}", True),
        ("{{cookiecutter.package_name}}", True),
        ("{% if cookiecutter.include_demo %}", True),
        ("port = cookiecutter.python_version", True),
        ("replay with cookiecutter --replay-file .cookiecutter.json", False),
        ('f"{{{name}}}"', False),
        ("class Socket {#retries = 0}", False),
    ],
)
def test_unrendered_pattern(text, unrendered):
    assert bool(UNRENDERED.search(text)) is unrendered


def test_bake_takes_under_two_seconds(baked):
    # Measured around cookiecutter alone, hooks included; about 0.3 s here.
    assert baked.seconds < 2.0, f"bake took {baked.seconds:.2f} s"


def test_nothing_left_unrendered(baked):
    project = baked.project_path
    leftovers = [
        str(path.relative_to(project))
        for path in sorted(project.rglob("*"))
        if UNRENDERED.search(path.name)
    ]
    for path, text in text_files(project):
        for number, line in enumerate(text.splitlines(), 1):
            if UNRENDERED.search(line):
                where = f"{path.relative_to(project)}:{number}"
                leftovers.append(f"{where}: {line.strip()}")
    assert not leftovers, "unrendered template syntax:\n" + "\n".join(leftovers)


def test_ruff_check_is_clean(baked):
    # Run in the bake, so the bake's own pyproject.toml configures ruff.
    run_ok(tool("ruff"), "check", "--no-cache", ".", cwd=baked.project_path)


def test_ruff_format_is_clean(baked):
    run_ok(tool("ruff"), "format", "--diff", "--no-cache", ".", cwd=baked.project_path)


@pytest.mark.timeout(600)
def test_mypy_is_clean(baked, tmp_path):
    """Strict, with the bake's own pyproject.toml (its exceptions named there),
    against the bake's dependencies and for the Python version it targets. Its
    cache goes elsewhere: the bake is shared by the tests and stays as baked."""
    project = baked.project_path
    python = cached_venv(project / "requirements-dev.txt")
    cache = ("--cache-dir", tmp_path / "mypy")
    run_ok(python, "-m", "mypy", *cache, cwd=project, timeout=300)


def test_only_the_chosen_variant_remains(baked):
    answers = answers_of(baked)
    package = baked.project_path / answers["package_name"]
    assert (package / "server.py").is_file()
    assert not list(baked.project_path.rglob("server_*.py"))
    assert (package / "static").is_dir() == answers["include_demo"]


def test_answers_are_recorded(baked):
    record = json.loads((baked.project_path / ".cookiecutter.json").read_text())
    recorded = record["cookiecutter"]
    assert not [key for key in QUESTIONS if key not in recorded], "questions missing"
    answers = answers_of(baked)
    assert {key: recorded[key] for key in QUESTIONS} == {
        key: answers[key] for key in QUESTIONS
    }


def test_replay_file_reproduces_the_bake(baked, tmp_path):
    """`cookiecutter --replay-file .cookiecutter.json` regenerates the same files.

    That is what the record is for: regenerate the project later, or diff it
    against a newer template. cookiecutter renders a replay file's missing
    private variables against an empty context, so the record must hold them too.
    """
    config = tmp_path / "config.yaml"
    config.write_text(f"replay_dir: {tmp_path / 'replay'}\n")
    run_ok(
        tool("cookiecutter"),
        "--replay-file", baked.project_path / ".cookiecutter.json",
        "--config-file", config,
        "--output-dir", tmp_path / "out",
        ROOT,
        cwd=tmp_path,
        lines=5,
    )  # fmt: skip
    again = tmp_path / "out" / baked.project_path.name
    assert not differences(baked.project_path, again)


def differences(left, right, prefix="") -> list[str]:
    """What differs between two trees, file contents included."""
    compared = filecmp.dircmp(left, right)
    found = [f"only in the bake: {prefix}{name}" for name in compared.left_only]
    found += [f"only in the replay: {prefix}{name}" for name in compared.right_only]
    _, mismatch, errors = filecmp.cmpfiles(
        left, right, compared.common_files, shallow=False
    )
    found += [f"differs: {prefix}{name}" for name in mismatch + errors]
    for name in compared.common_dirs:
        found += differences(left / name, right / name, f"{prefix}{name}/")
    return found
