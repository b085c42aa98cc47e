"""Checks the import contract of pyproject.toml ([tool.importlinter]) on the package as installed.

import-linter finds a package's modules by walking its folder, but speechpipe's sub-packages
`pipeline`, `components` and `schemas` live at the repository root (setup.py's package_dir). This
lays the sources out as the wheel does, in a scratch folder, and runs `lint-imports` there.

    python .ci/import_contract.py [--root REPO]
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def root_packages(repo: str) -> tuple:
    """setup.py's _ROOT_PACKAGES, read without running setup.py."""
    with open(os.path.join(repo, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_ROOT_PACKAGES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise SystemExit("setup.py defines no _ROOT_PACKAGES")


def lay_out(repo: str, target: str) -> str:
    """Copies the package's Python files into target/speechpipe as the wheel holds them."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.json", "*.pbtxt", "*.txt")
    package = os.path.join(target, "speechpipe")
    shutil.copytree(os.path.join(repo, "src", "speechpipe"), package, ignore=ignore)
    for name in root_packages(repo):
        shutil.copytree(os.path.join(repo, name), os.path.join(package, name), ignore=ignore)
    return target


def check(repo: str) -> int:
    lint_imports = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    with tempfile.TemporaryDirectory(prefix="import-contract-") as scratch:
        lay_out(repo, scratch)
        env = dict(os.environ, PYTHONPATH=scratch)
        return subprocess.run(
            [lint_imports, "--config", os.path.join(repo, "pyproject.toml"), "--no-cache"], cwd=scratch, env=env
        ).returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.dirname(HERE), help="the repository (default: this one)")
    return check(os.path.abspath(parser.parse_args(argv).root))


if __name__ == "__main__":
    sys.exit(main())
