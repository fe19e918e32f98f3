"""Static checks that every bake deploys on Heroku's Python buildpack as is."""

import json
import re

from support import answers_of

from tooling import web_command

# Every interface, and the port Heroku gives the dyno (R10 when not bound in 60 s).
ALL_INTERFACES = re.compile(r"0\.0\.0\.0|\[?::\]?(?=[\s:]|$)")
DOLLAR_PORT = re.compile(r"\$\{?PORT\b")
# The buildpack installs from exactly one of these.
MANIFESTS = ("requirements.txt", "uv.lock", "poetry.lock", "Pipfile.lock")
# name[extras]==version ; marker
PINNED = re.compile(r"^[\w.-]+(\[[\w.,-]+\])?==[^\s;=*]+(\s*;.+)?$")


def test_procfile_runs_one_web_process_without_uv(baked):
    command = web_command(baked.project_path)  # raises unless there is one
    # uv is not on PATH at run time on Heroku: the buildpack installs into a venv.
    assert "uv run" not in command


def test_web_process_binds_all_interfaces_on_dollar_port(baked):
    command = web_command(baked.project_path)
    package = answers_of(baked)["package_name"]
    if ALL_INTERFACES.search(command) and DOLLAR_PORT.search(command):
        return  # e.g. `--host 0.0.0.0 --port $PORT`, `--bind 0.0.0.0:$PORT`
    # Otherwise the app must read PORT and bind every interface itself.
    assert command == f"python -m {package}", (
        f"web: {command!r} names neither `0.0.0.0` and `$PORT` nor "
        f"`python -m {package}`"
    )
    code = "\n".join(
        path.read_text() for path in (baked.project_path / package).rglob("*.py")
    )
    assert '"PORT"' in code, "the package never reads the PORT variable"
    assert "0.0.0.0" in code, "the package never binds 0.0.0.0"


def test_python_version_is_the_answer(baked):
    version = (baked.project_path / ".python-version").read_text()
    assert version == f"{answers_of(baked)['python_version']}\n"
    assert re.fullmatch(r"3\.\d{1,2}\n", version)
    # Deprecated by the buildpack in favour of .python-version.
    assert not (baked.project_path / "runtime.txt").exists()


def test_exactly_one_dependency_manifest(baked):
    present = [name for name in MANIFESTS if (baked.project_path / name).exists()]
    assert present == ["requirements.txt"]


def test_every_requirement_is_pinned(baked):
    lines = (baked.project_path / "requirements.txt").read_text().splitlines()
    requirements = [line.split(" #")[0].strip() for line in lines]
    requirements = [line for line in requirements if line and not line.startswith("#")]
    assert requirements
    loose = [line for line in requirements if not PINNED.match(line)]
    assert not loose, f"not pinned with ==: {loose}"


def plan_names(addons) -> list[str]:
    """app.json addons are "plan" strings or {"plan": ...} objects."""
    return [addon if isinstance(addon, str) else addon["plan"] for addon in addons]


def test_app_json_provisions_redis_and_heroku_ci(baked):
    app = json.loads((baked.project_path / "app.json").read_text())
    plans = plan_names(app.get("addons", []))
    assert [plan for plan in plans if plan.split(":")[0] == "heroku-redis"], plans
    test = app["environments"]["test"]
    # Heroku CI: an in-dyno Redis (a redis:// URL) and the test command.
    assert "heroku-redis:in-dyno" in plan_names(test.get("addons", []))
    assert test["scripts"]["test"].strip()


# Set by Heroku itself (PORT, DYNO, WEB_CONCURRENCY) or by the Redis add-on.
SET_BY_HEROKU = {"PORT", "DYNO", "WEB_CONCURRENCY", "REDIS_URL"}


def test_app_json_generates_auth_secret_and_describes_every_setting(baked):
    """The Heroku Button's form shows each setting the app reads, with a
    description, and makes the signing key itself."""
    app = json.loads((baked.project_path / "app.json").read_text())
    env = app["env"]
    assert env["AUTH_SECRET"]["generator"] == "secret"
    assert env["API_KEY"]["required"] is False
    assert "openssl rand" in env["API_KEY"]["description"]
    package = answers_of(baked)["package_name"]
    settings = (baked.project_path / package / "settings.py").read_text()
    read = set(re.findall(r'env\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', settings))
    assert {"AUTH_SECRET", "API_KEY", "WS_PING_INTERVAL"} <= read  # the regex works
    missing = sorted(read - SET_BY_HEROKU - set(env))
    assert not missing, f"app.json does not describe {missing}"
    assert all(entry.get("description") for entry in env.values())
