"""The hooks: refusing bad answers (unit and through cookiecutter), and pruning."""

import json

import pytest
from support import AVAILABLE, POST_GEN, PRE_GEN, ROOT, bake, run, tool, try_bake

GOOD = {"project_slug": "realtime-app", "package_name": "realtime_app"}
BAD_SLUGS = {
    "uppercase": "Realtime-App",
    "underscore": "realtime_app",
    "leading-digit": "1realtime",
    "31-chars": "a" * 31,
    "trailing-dash": "realtime-",
}
BAD_PACKAGES = {
    "dash": "realtime-app",
    "uppercase": "Realtime",
    "keyword": "class",
    "stdlib": "json",
    "dependency": "redis",
}
# (answers, the value the refusal must name), with readable ids.
REFUSALS = [
    pytest.param({**GOOD, "project_slug": slug}, slug, id=f"slug-{name}")
    for name, slug in BAD_SLUGS.items()
] + [
    pytest.param({**GOOD, "package_name": package}, package, id=f"package-{name}")
    for name, package in BAD_PACKAGES.items()
]  # fmt: skip


def answers(**changes: str) -> dict[str, str]:
    return {**GOOD, "framework": AVAILABLE[0], **changes}


def test_the_hooks_know_the_framework_choices():
    """The hooks' copies of cookiecutter.json's list (a hook cannot read it)."""
    assert PRE_GEN.FRAMEWORKS == POST_GEN.FRAMEWORKS == AVAILABLE


@pytest.mark.parametrize("slug", ["a", "a" * 30, "realtime-app-2"])
def test_good_slugs_pass(slug):
    assert PRE_GEN.problems(answers(project_slug=slug)) == []


@pytest.mark.parametrize("package", ["a", "realtime_app", "_private", "app2"])
def test_good_packages_pass(package):
    assert PRE_GEN.problems(answers(package_name=package)) == []


@pytest.mark.parametrize("bad, named", REFUSALS)
def test_each_bad_answer_is_one_line_naming_it(bad, named):
    found = PRE_GEN.problems({"framework": AVAILABLE[0], **bad})
    assert len(found) == 1, found
    assert repr(named) in found[0]
    assert "\n" not in found[0]


def test_unknown_framework_is_refused():
    (problem,) = PRE_GEN.problems(answers(framework="flask"))
    assert "'flask'" in problem and "unknown" in problem


def test_replay_of_an_unknown_framework_is_refused(cookies, tmp_path):
    """A replay file is the one way past cookiecutter's own check of a choice."""
    record = bake(cookies).project_path / ".cookiecutter.json"
    replay = json.loads(record.read_text())
    replay["cookiecutter"]["framework"] = "flask"
    (tmp_path / "replay.json").write_text(json.dumps(replay))
    (tmp_path / "config.yaml").write_text(f"replay_dir: {tmp_path / 'replays'}\n")
    done = run(
        tool("cookiecutter"),
        *("--replay-file", tmp_path / "replay.json"),
        *("--config-file", tmp_path / "config.yaml"),
        *("--output-dir", tmp_path / "out", ROOT),
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "ERROR: framework 'flask' is unknown" in done.stderr, done.stderr


def test_all_problems_are_reported_at_once():
    found = PRE_GEN.problems(
        {"project_slug": "Bad_Slug", "package_name": "json", "framework": "flask"}
    )
    assert len(found) == 3, found


@pytest.mark.parametrize("bad, named", REFUSALS)
def test_bake_refuses_bad_answer(cookies, capfd, tmp_path, bad, named):
    result = try_bake(cookies, **bad)
    assert result.exit_code != 0
    # cookiecutter runs the hook as a subprocess: its stderr reaches fd 2.
    err = capfd.readouterr().err
    assert "ERROR:" in err
    assert repr(named) in err, err
    # cookiecutter removes the half-made project when the pre-gen hook fails.
    assert not list((tmp_path / "cookies").glob("bake*/*"))


@pytest.mark.parametrize("framework", POST_GEN.FRAMEWORKS)
@pytest.mark.parametrize("demo", [True, False], ids=["demo", "nodemo"])
def test_plan_keeps_only_the_chosen_variant(framework, demo):
    remove, renames = POST_GEN.plan(
        {"package_name": "pkg", "framework": framework, "include_demo": str(demo)}
    )
    others = {f"pkg/server_{other}.py" for other in POST_GEN.FRAMEWORKS}
    others.remove(f"pkg/server_{framework}.py")
    # Files only some frameworks use.
    if framework not in ("fastapi", "django"):
        others |= {"pkg/serve_uvicorn.py", "tests/asgi_send_wrapper"}
    if framework == "websockets":
        others.add("pkg/queued_sink.py")
    else:
        others.add("pkg/plain_http.py")
    if framework != "django":
        others |= {"pkg/django_settings.py", "manage.py"}
    assert set(remove) == others | (set() if demo else {"pkg/static"})
    assert renames == {f"pkg/server_{framework}.py": "pkg/server.py"}


def test_apply_prunes_and_renames(tmp_path):
    package = tmp_path / "pkg"
    (package / "static").mkdir(parents=True)
    (package / "static" / "index.html").write_text("<!doctype html>")
    for name in POST_GEN.FRAMEWORKS:
        (package / f"server_{name}.py").write_text(f"# {name}\n")
    (package / "settings.py").write_text("")
    POST_GEN.apply(
        tmp_path,
        {"package_name": "pkg", "framework": "websockets", "include_demo": "False"},
    )
    assert sorted(path.name for path in package.iterdir()) == [
        "server.py",
        "settings.py",
    ]
    assert (package / "server.py").read_text() == "# websockets\n"
