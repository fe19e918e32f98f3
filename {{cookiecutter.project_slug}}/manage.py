#!/usr/bin/env python
"""Django's command line, for its own tools: `python manage.py collectstatic`
(Heroku's build runs it because this file exists), `check`, `shell`.

The app itself runs with the Procfile's command, not with `runserver`.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault(
        "DJANGO_SETTINGS_MODULE",
        "{{ cookiecutter.package_name }}.django_settings",
    )
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
