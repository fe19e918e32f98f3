"""Remove what the answers did not choose, driven by one declarative manifest.

Jinja appears only inside the string literals of ANSWERS, so this module imports
unrendered in the template's unit tests.
"""

import shutil
import sys
from pathlib import Path

ANSWERS = {
    "package_name": "{{ cookiecutter.package_name }}",
    "framework": "{{ cookiecutter.framework }}",
    "include_demo": "{{ cookiecutter.include_demo }}",
}

# cookiecutter.json's framework choices, copied as in pre_gen_project.py and for
# its reason (a replay's context holds only the answer).
FRAMEWORKS = ("websockets", "fastapi", "aiohttp", "django")
PACKAGE = "{package}"  # filled in by plan()

# Each path (``{package}`` filled in) is kept only when every answer named is one
# of the values listed.
KEEP_WHEN: dict[str, dict[str, tuple[str, ...]]] = {
    "{package}/static": {"include_demo": ("True",)},
    **{f"{PACKAGE}/server_{name}.py": {"framework": (name,)} for name in FRAMEWORKS},
    "{package}/serve_uvicorn.py": {"framework": ("fastapi", "django")},
    "{package}/queued_sink.py": {"framework": ("fastapi", "aiohttp", "django")},
    "{package}/plain_http.py": {"framework": ("websockets",)},
    "tests/asgi_send_wrapper": {"framework": ("fastapi", "django")},
    "{package}/django_settings.py": {"framework": ("django",)},
    "manage.py": {"framework": ("django",)},
}
# After pruning, the chosen variant's server module takes the common name.
RENAME = {"{package}/server_{framework}.py": "{package}/server.py"}


def plan(answers: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The paths to remove and the renames to make, relative to the project."""
    remove = [
        path.format(package=answers["package_name"])
        for path, wanted in KEEP_WHEN.items()
        if any(answers[key] not in values for key, values in wanted.items())
    ]
    package, framework = answers["package_name"], answers["framework"]
    renames = {
        source.format(package=package, framework=framework): target.format(
            package=package
        )
        for source, target in RENAME.items()
    }
    return remove, renames


def apply(root: Path, answers: dict[str, str]) -> None:
    remove, renames = plan(answers)
    for relative in remove:
        path = root / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for source, target in renames.items():
        (root / source).rename(root / target)


def main() -> int:
    apply(Path.cwd(), ANSWERS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
