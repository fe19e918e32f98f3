"""docs/reliability.py turns real junit reports of `record_property` figures into
the published tables: one per test, one column per framework."""

import datetime
import sys

import pytest
from support import ROOT, load_source, run

REPORT = load_source(ROOT / "docs" / "reliability.py")

TESTS = """
import pytest

def test_redis_restart(record_property):
    record_property("resumed after (s)", 0.61)
    record_property("close codes", "1001 x 3")

def test_shutdown(record_property):
    record_property("exit after (s)", 1.5)
    record_property("Autobahn|Testsuite", "a|b")
    assert VARIANT != "aiohttp", "made to fail for one framework"
"""


def junit_report(tmp_path, framework: str) -> None:
    """Run a small suite as the slow lane runs a bake's, with its junit options."""
    suite = tmp_path / framework / "test_outage.py"
    suite.parent.mkdir()
    suite.write_text(f"VARIANT = {framework!r}\n{TESTS}")
    report = tmp_path / "figures" / f"{framework}.xml"
    run(
        *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", suite),
        *(f"--junitxml={report}", "-o", "junit_family=xunit1"),
        cwd=suite.parent,
    )
    assert report.exists()


def test_tables_show_each_figure_per_framework(tmp_path):
    (tmp_path / "figures").mkdir()
    for framework in ("websockets", "aiohttp"):
        junit_report(tmp_path, framework)
    (tmp_path / "figures" / "aiohttp.txt").write_text("Python 3.11.7, aiohttp==9.9")
    now = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)

    doc = REPORT.render(tmp_path / "figures", now)

    assert "2026-11-26 12:00 UTC" in doc
    assert "- `aiohttp`: Python 3.11.7, aiohttp==9.9" in doc
    assert "- no report for: fastapi, django" in doc
    restart = doc.split("## Redis restart (`test_outage`)\n", 1)[1].split("\n## ")[0]
    # The promise is the generated test's own docstring, on one line.
    assert restart.startswith("\nRedis stopped for 3 s under two app processes:")
    assert "| figure | `websockets` | `aiohttp` |" in restart
    assert "| result | passed | passed |" in restart
    assert "| resumed after (s) | 0.61 | 0.61 |" in restart
    assert "| close codes | 1001 x 3 | 1001 x 3 |" in restart
    shutdown = doc.split("## Shutdown (`test_outage`)\n", 1)[1]
    assert "| result | passed | **FAILED** |" in shutdown
    assert "| exit after (s) | 1.5 | 1.5 |" in shutdown
    assert "| Autobahn\\|Testsuite | a\\|b | a\\|b |" in shutdown  # pipes escaped


def test_no_reports_is_an_error_naming_the_command(tmp_path):
    with pytest.raises(SystemExit, match=r"python3 dev\.py reliability"):
        REPORT.render(tmp_path, datetime.datetime.now(datetime.UTC))
