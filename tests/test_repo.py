"""The template's own code and docs: lint, the questions, the two commands."""

import re
import sys

import pytest
from support import COOKIECUTTER_JSON, QUESTIONS, ROOT, run, run_ok, tool

COMMANDS = ["python3 dev.py demo", "python3 dev.py test"]


# The template's own code: the root pyproject.toml excludes the app source.
def test_template_code_passes_ruff_check():
    run_ok(tool("ruff"), "check", "--no-cache", ".", cwd=ROOT)


def test_template_code_is_ruff_formatted():
    run_ok(tool("ruff"), "format", "--diff", "--no-cache", ".", cwd=ROOT)


# The files and the settings: [tool.mypy] in pyproject.toml.
@pytest.mark.timeout(300)
def test_template_code_passes_mypy():
    run_ok(tool("mypy"), cwd=ROOT, timeout=240)


def test_every_question_has_a_prompt():
    prompts = COOKIECUTTER_JSON["__prompts__"]
    assert sorted(prompts) == sorted(QUESTIONS)
    for name, choices in COOKIECUTTER_JSON.items():
        if isinstance(choices, list) and not name.startswith("_"):
            assert set(prompts[name]) - {"__prompt__"} == set(choices), name


def test_readme_quick_start_is_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"python3 dev\.py \w+", quick_start) == COMMANDS


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert script.startswith("#!/usr/bin/env bash\nset -euo pipefail\n")
    # Both lanes: no pytest arguments that would deselect the slow one.
    assert re.findall(r"^python3 dev\.py.*$", script, re.MULTILINE) == [COMMANDS[1]]


@pytest.mark.parametrize("argv", [[], ["deploy"], ["demo", "extra"]])
def test_dev_py_refuses_other_commands(argv):
    usage = run(sys.executable, ROOT / "dev.py", *argv, cwd=ROOT)
    assert usage.returncode == 2
    assert all(command.split(" ", 1)[1] in usage.stderr for command in COMMANDS)
