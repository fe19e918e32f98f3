"""Each bake passes its own test suite, run the way its README says to run it.

One bake per (framework, include_demo): the Python answer changes only
.python-version and the lint target, so the suite runs on the Python at hand.
The suite takes a minute or two; the venv is cached across runs by requirements.
"""

import pytest
from support import (
    AVAILABLE,
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
def test_bake_passes_its_own_suite(cookies, answers):
    require_redis()
    project = bake(cookies, **answers).project_path
    python = cached_venv(project / "requirements-dev.txt")
    env = venv_env(python)
    run_ok(python, "-m", "pytest", "-q", cwd=project, env=env, timeout=840, lines=80)


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
