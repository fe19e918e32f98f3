"""Each bake passes its own test suite, run the way its README says to run it.

One bake per (framework, include_demo): the Python answer changes only
.python-version and the lint target, so the suite runs on the Python at hand.
The suite takes a minute or two; the venv is cached across runs by requirements.
"""

import re
import shutil

import pytest
from support import (
    AVAILABLE,
    FIGURES,
    bake,
    cached_venv,
    require_redis,
    run_ok,
    variant_id,
    venv_env,
)

SUITES = [
    {"framework": framework, "include_demo": demo}
    for framework in AVAILABLE
    for demo in (True, False)
]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("answers", SUITES, ids=variant_id)
def test_bake_passes_its_quick_lane(cookies, answers):
    require_redis()
    project = bake(cookies, **answers).project_path
    python = cached_venv(project / "requirements-dev.txt")
    env = venv_env(python)
    quick = ("-m", "not slow")
    run_ok(python, "-m", "pytest", "-q", *quick, cwd=project, env=env, timeout=840)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("framework", ["fastapi", "django"])
def test_asgi_bake_passes_its_quick_lane_behind_a_send_wrapping_middleware(
    cookies, framework
):
    """An outer ASGI middleware that wraps send (as Sentry or OpenTelemetry do)
    hides uvicorn's own send from the app: its fast path gives way to the public
    fallback, and the whole contract still holds (tests/asgi_send_wrapper/)."""
    require_redis()
    project = bake(cookies, framework=framework).project_path
    python = cached_venv(project / "requirements-dev.txt")
    env = {**venv_env(python), "TEST_WRAP_ASGI_SEND": "1"}
    run_ok(
        python,
        "-m",
        "pytest",
        "-q",
        "-m",
        "not slow",
        cwd=project,
        env=env,
        timeout=840,
    )


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("framework", AVAILABLE)
def test_bake_passes_its_slow_lane(cookies, framework):
    """Faults, load, proxy and conformance: once per framework (the demo page
    changes none of it). The figures the tests record go to build/reliability/,
    from which `python3 dev.py reliability` writes docs/reliability.md."""
    require_redis()
    project = bake(cookies, framework=framework, include_demo=True).project_path
    python = cached_venv(project / "requirements-dev.txt")
    env = venv_env(python)
    FIGURES.mkdir(parents=True, exist_ok=True)
    report = FIGURES / f"{framework}.xml"
    report.unlink(missing_ok=True)
    (FIGURES / f"{framework}.txt").write_text(versions(python, project))
    slow = ("-m", "slow", f"--junitxml={report}", "-o", "junit_family=xunit1")
    run_ok(python, "-m", "pytest", "-q", *slow, cwd=project, env=env, timeout=1440)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("demo", [True, False], ids=["demo", "nodemo"])
def test_django_collectstatic_runs_as_in_heroku_build(cookies, demo):
    """Heroku's buildpack runs `manage.py collectstatic --noinput` when manage.py
    exists, with no SECRET_KEY and no DYNO: it must succeed, demo page or not."""
    project = bake(cookies, framework="django", include_demo=demo).project_path
    python = cached_venv(project / "requirements-dev.txt")
    env = {
        key: value
        for key, value in venv_env(python).items()
        if key not in ("SECRET_KEY", "DYNO")
    }
    manage = ("manage.py", "collectstatic", "--noinput")
    done = run_ok(python, *manage, cwd=project, env=env, timeout=120)
    copied = sorted(path.name for path in (project / "staticfiles").rglob("*.*"))
    if demo:
        assert {"index.html", "app.js", "style.css"} <= set(copied), done.stdout
    else:
        assert copied == [], done.stdout


def versions(python, project) -> str:
    """One line: the app's pins, its Python, and the servers the slow lane ran."""
    pins = [
        line.strip()
        for line in (project / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    ]
    parts = [run_ok(python, "--version", cwd=project).stdout.strip(), *pins]
    for server in (("redis-server", "--version"), ("haproxy", "-v")):
        if shutil.which(server[0]):
            said = run_ok(*server, cwd=project).stdout
            version = re.search(r"\d+\.\d+\.\d+", said)
            parts.append(f"{server[0]} {version[0] if version else '?'}")
    return ", ".join(parts)
