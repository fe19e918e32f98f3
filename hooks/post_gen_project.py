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

FRAMEWORKS = ("websockets", "fastapi", "aiohttp", "django")

# Each path (``{package}`` filled in) is kept only when every answer named matches.
KEEP_WHEN = {
    "{package}/static": {"include_demo": "True"},
    **{"{package}/server_" + name + ".py": {"framework": name} for name in FRAMEWORKS},
}
# After pruning, the chosen variant's server module takes the common name.
RENAME = {"{package}/server_{framework}.py": "{package}/server.py"}


def plan(answers: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The paths to remove and the renames to make, relative to the project."""
    remove = [
        path.format(package=answers["package_name"])
        for path, wanted in KEEP_WHEN.items()
        if any(answers[key] != value for key, value in wanted.items())
    ]
    renames = {
        source.format(package=answers["package_name"], framework=answers["framework"]): (
            target.format(package=answers["package_name"])
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
