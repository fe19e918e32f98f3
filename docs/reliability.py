#!/usr/bin/env python3
"""Write docs/reliability.md from the slow lane's reports in build/reliability/.

    python3 dev.py reliability     run the slow lane of every framework, then this
    python3 docs/reliability.py    only this, from the reports already there

Each framework's slow lane (tests/test_bake_suite.py) leaves `<framework>.xml`, the
junit report of the generated app's slow tests, whose figures are the tests' own
`record_property` calls, and `<framework>.txt`, the versions that ran. Nothing in
the document is typed by hand. Standard library only, like dev.py.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tooling.py

from tooling import FRAMEWORKS, ROOT  # noqa: E402

FIGURES = ROOT / "build" / "reliability"
DOC = ROOT / "docs" / "reliability.md"
# The generated app's tests, as the template holds them (their docstrings are
# plain Python, no Jinja).
TESTS = ROOT / "{{cookiecutter.project_slug}}" / "tests"
TEST_DOCSTRING = re.compile(
    r'^def (test_\w+)\([^)]*\)[^:\n]*:\n\s+"""(.*?)"""', re.MULTILINE | re.DOTALL
)

INTRO = """\
# Reliability: the contract under faults, load and hostile input

Every figure below was measured by the slow lane of a generated app's own test
suite (`tests/` of each bake, marker `slow`), run against the app started from its
`Procfile`, with a real `redis-server`, real client processes and real sockets.
Each test asserts the contract's promise; the figures are what it saw on the way.
A test that failed shows **FAILED** in its `result` row.

Regenerate with `python3 dev.py reliability` (about 7 minutes); do not edit by hand.
"""


def load(report: Path) -> dict[str, dict[str, str]]:
    """{test name: {"result": ..., figure name: value, ...}} in the report's order."""
    tests: dict[str, dict[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").rpartition(".")[2]
        name = case.get("name", "")
        failed = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        figures = {"result": "FAILED" if failed else "skipped" if skipped else "passed"}
        figures["test time (s)"] = f"{float(case.get('time', 0)):.1f}"
        for prop in case.iter("property"):
            figures[prop.get("name", "")] = prop.get("value", "")
        tests[f"{module}::{name}"] = figures
    return tests


def promises(tests: Path) -> dict[str, str]:
    """{`module::test_name`: the test's docstring, on one line} from the generated
    app's test sources, so that each table says what its test holds the app to."""
    found = {}
    for source in sorted(tests.glob("test_*.py")):
        # A regular expression, not ast: some of these files hold Jinja blocks.
        for name, doc in TEST_DOCSTRING.findall(source.read_text()):
            found[f"{source.stem}::{name}"] = " ".join(doc.split())
    return found


def title(test: str) -> str:
    """`test_outage::test_redis_restart[x]` -> `Redis restart [x]`."""
    module, _, name = test.partition("::")
    words = re.sub(r"^test_", "", name).replace("_", " ")
    return f"{words[:1].upper()}{words[1:]} (`{module}`)"


def render(figures: Path, now: datetime.datetime) -> str:
    found = [fw for fw in FRAMEWORKS if (figures / f"{fw}.xml").exists()]
    reports = {fw: load(figures / f"{fw}.xml") for fw in found}
    if not reports:
        sys.exit(f"no reports in {figures}: run `python3 dev.py reliability` first")
    frameworks = list(reports)
    lines = [INTRO]
    lines += [
        "## Where",
        "",
        f"- {now:%Y-%m-%d %H:%M} UTC, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()} (the tests' side)",
    ]
    for fw in frameworks:
        versions = figures / f"{fw}.txt"
        if versions.exists():
            lines.append(f"- `{fw}`: {versions.read_text().strip()}")
    missing = [fw for fw in FRAMEWORKS if fw not in reports]
    if missing:
        lines.append(f"- no report for: {', '.join(missing)}")
    lines.append("")
    tests = list(dict.fromkeys(t for fw in frameworks for t in reports[fw]))
    said = promises(TESTS)
    for test in tests:
        lines += [f"## {title(test)}", ""]
        promise = said.get(test.partition("[")[0])
        if promise:
            lines += [promise, ""]
        lines.append("| figure | " + " | ".join(f"`{fw}`" for fw in frameworks) + " |")
        lines.append("|---" * (len(frameworks) + 1) + "|")
        names = list(
            dict.fromkeys(n for fw in frameworks for n in reports[fw].get(test, {}))
        )
        for name in names:
            cells = [str(reports[fw].get(test, {}).get(name, "–")) for fw in frameworks]
            cells = [f"**{cell}**" if cell == "FAILED" else cell for cell in cells]
            row = [name, *cells]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    now = datetime.datetime.now(datetime.UTC)
    DOC.write_text(render(FIGURES, now))
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
