"""Checks an installed speechpipe: every module imports, every data file is there, and the package
comes from the environment being checked, not from a source tree on the path.

    python deploy/check_install.py [--expect-prefix VENV]

The image's last build step runs it (deploy/image_steps.sh check), and so do the tests of the
installed wheel and sdist. It prints one line per finding and exits 1 on any problem."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from importlib import resources
from typing import List

# The data files the package reads at run time, by the package that holds them.
DATA_FILES = {
    "speechpipe.schemas": ["features.pbtxt", "phones_de.json", "phones_en.json"],
    "speechpipe.corpus": ["sentences_de.txt"],
}


# The sub-packages whose sources sit at the repository root (setup.py's _ROOT_PACKAGES). Installed,
# they are folders of speechpipe like the others; in an editable install they are not under
# speechpipe's folder, so each is walked from its own. tests/test_layout.py holds this to setup.py.
ROOT_PACKAGES = ("pipeline", "components", "schemas")


def all_modules() -> List[str]:
    """Every module and sub-package of the installed speechpipe, found on disk (not from a list
    that could miss a new one): speechpipe's folder, and each root package's own folder."""
    import speechpipe

    found = {"speechpipe"}
    for info in pkgutil.walk_packages(speechpipe.__path__, prefix="speechpipe."):
        found.add(info.name)
    for name in ROOT_PACKAGES:
        package = f"speechpipe.{name}"
        found.add(package)
        try:
            module = importlib.import_module(package)
        except Exception:  # reported by check(), which imports every name listed here
            continue
        for info in pkgutil.walk_packages(module.__path__, prefix=package + "."):
            found.add(info.name)
    return sorted(found)


def check(expect_prefix: str = "") -> List[str]:
    """The problems found; empty when the installation is complete."""
    problems = []
    # Users and the pipeline's nodes run `python -m ...` and `python -c ...` from the working
    # folder (the image's WORKDIR), which puts it first on the path: do the same, so that a source
    # tree there that shadows the installed package is found here.
    sys.path.insert(0, os.getcwd())
    import speechpipe

    location = os.path.realpath(os.path.dirname(speechpipe.__file__))
    print(f"speechpipe from {location}")
    if expect_prefix and not location.startswith(os.path.realpath(expect_prefix) + os.sep):
        problems.append(f"speechpipe is imported from {location}, not from the environment {expect_prefix}")
    modules = all_modules()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception:  # any failure to import is a finding, reported with its traceback
            problems.append(f"{name} does not import:\n{traceback.format_exc(limit=3)}")
            continue
        # Every module, the root packages' included, from the environment (not one shadowed by a
        # folder of the same name here).
        where = os.path.realpath(getattr(module, "__file__", None) or location)
        if expect_prefix and not where.startswith(os.path.realpath(expect_prefix) + os.sep):
            problems.append(f"{name} is imported from {where}, not from the environment {expect_prefix}")
    print(f"{len(modules)} modules imported" if not problems else f"{len(modules)} modules checked")
    for package, names in DATA_FILES.items():
        for name in names:
            try:
                present = resources.files(package).joinpath(name).is_file()
            except ModuleNotFoundError:
                present = False
            if not present:
                problems.append(f"data file {package}/{name} is missing")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect-prefix", default="", help="the environment speechpipe must be imported from")
    args = parser.parse_args(argv)
    problems = check(args.expect_prefix)
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
