"""Refuse bad answers before cookiecutter writes anything, one clear line each.

Jinja appears only inside the string literals of ANSWERS, so this module imports
unrendered in the template's unit tests, which call ``problems()`` directly.
"""

import keyword
import re
import sys

ANSWERS = {
    "project_slug": "{{ cookiecutter.project_slug }}",
    "package_name": "{{ cookiecutter.package_name }}",
    "framework": "{{ cookiecutter.framework }}",
}

# Heroku's rule for app names; the slug becomes the app name in app.json.
SLUG_RULE = re.compile(r"^[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?$")
PACKAGE_RULE = re.compile(r"^[a-z_][a-z0-9_]*$")
# Names the generated app imports: a package of the same name would shadow them.
DEPENDENCY_NAMES = {
    "aiohttp",
    "channels",
    "daphne",
    "django",
    "fastapi",
    "hiredis",
    "redis",
    "starlette",
    "tests",
    "uvicorn",
    "websockets",
    "whitenoise",
}
# cookiecutter.json's framework choices, copied (tests/test_hooks.py holds the two
# equal): a hook sees only its rendering context, and where this check matters,
# a --replay-file run, `_cookiecutter.framework` there is the answer, not the list.
FRAMEWORKS = ("websockets", "fastapi", "aiohttp", "django")


def problems(answers: dict[str, str]) -> list[str]:
    """Every rule the answers break, as one line each naming the answer and the rule."""
    found = []
    slug = answers["project_slug"]
    if not SLUG_RULE.match(slug):
        found.append(
            f"project_slug {slug!r} is not a valid Heroku app name: use 1 to 30 "
            "lowercase letters, digits and dashes, starting with a letter and not "
            "ending with a dash"
        )
    package = answers["package_name"]
    if not PACKAGE_RULE.match(package):
        found.append(
            f"package_name {package!r} is not a lowercase Python identifier: use "
            "lowercase letters, digits and underscores, not starting with a digit"
        )
    elif keyword.iskeyword(package) or keyword.issoftkeyword(package):
        found.append(f"package_name {package!r} is a Python keyword: choose another")
    elif package in sys.stdlib_module_names:
        found.append(
            f"package_name {package!r} is a standard-library module name: "
            "choose another name so the package does not shadow it"
        )
    elif package in DEPENDENCY_NAMES:
        found.append(
            f"package_name {package!r} is the name of a package the app imports: "
            "choose another name so the package does not shadow it"
        )
    framework = answers["framework"]
    # cookiecutter checks a choice it prompts for or is given as extra context,
    # not one in a replay file (say, of a framework the template has dropped).
    if framework not in FRAMEWORKS:
        found.append(
            f"framework {framework!r} is unknown: choose one of {', '.join(FRAMEWORKS)}"
        )
    return found


def main() -> int:
    found = problems(ANSWERS)
    for line in found:
        print(f"ERROR: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
