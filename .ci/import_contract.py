"""Checks the import contract of pyproject.toml ([tool.importlinter]) on the package as installed.

import-linter finds a package's modules by walking its folder, but speechpipe's sub-packages
`pipeline`, `components` and `schemas` live at the repository root (setup.py's package_dir). This
lays the sources out as the wheel does, in a scratch folder, and runs `lint-imports` there.

    python .ci/import_contract.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # the repository: its tests package reads setup.py

from tests.product import root_packages  # noqa: E402 - after the path is set


def lay_out(target: str, repo: str = REPO) -> str:
    """Copies the package's Python files into target/speechpipe as the wheel holds them."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.json", "*.pbtxt", "*.txt")
    package = os.path.join(target, "speechpipe")
    shutil.copytree(os.path.join(repo, "src", "speechpipe"), package, ignore=ignore)
    for name in root_packages():
        shutil.copytree(os.path.join(repo, name), os.path.join(package, name), ignore=ignore)
    return target


def lint(layout: str, capture: bool = False) -> subprocess.CompletedProcess:
    """`lint-imports` with the repository's contract over a laid-out package."""
    lint_imports = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    return subprocess.run(
        [lint_imports, "--config", os.path.join(REPO, "pyproject.toml"), "--no-cache"],
        cwd=layout,
        env=dict(os.environ, PYTHONPATH=layout),
        capture_output=capture,
        text=True,
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="import-contract-") as scratch:
        return lint(lay_out(scratch)).returncode


if __name__ == "__main__":
    sys.exit(main())
