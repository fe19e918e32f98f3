"""``python -m {{ cookiecutter.package_name }}``: the web process, as the Procfile
starts it.

The server module is imported once, here, under its own name: uvicorn's workers
find it already loaded instead of running it a second time as ``__main__``.
"""

from .server import main

main()
