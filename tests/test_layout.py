"""The repository's layout guards. `pipeline/`, `components/` and `schemas/` sit at the repository
root and install as `speechpipe.pipeline`, `speechpipe.components` and `speechpipe.schemas`
(setup.py's package_dir, `_ROOT_PACKAGES`); the rest of the package is under src/speechpipe/.

- No `speechpipe` folder (or module) at the root: it would shadow the installed package for every
  command run from there (the image's WORKDIR holds the same tree).
- No module imports a root package by its folder name (`import pipeline`, `from components...`):
  that works from the checkout's root only, and never in the installed product.
- deploy/check_install.py (the image's and the installed product's import check) knows the root
  packages, and lists every module of the package, the root packages' included.
- The sdist Beam's `--setup_file` builds (`python setup.py sdist`, Beam's fallback when the `build`
  package is absent, as in the lock), from the image's build context, holds every module and data
  file of the package.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import tarfile

import pytest

from tests.product import REPO, build_context, package_files, root_packages, run, user_env


def _python_files():
    """The repository's Python files: tracked, and new ones git does not ignore."""
    listed = subprocess.run(
        ["git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(p for p in listed if not p.startswith("tests/data/") and os.path.isfile(os.path.join(REPO, p)))


def _check_install():
    spec = importlib.util.spec_from_file_location("check_install", os.path.join(REPO, "deploy", "check_install.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_root_packages_are_the_design_cards():
    assert root_packages() == ("pipeline", "components", "schemas")
    for name in root_packages():
        assert os.path.isfile(os.path.join(REPO, name, "__init__.py")), name
        assert not os.path.exists(os.path.join(REPO, "src", "speechpipe", name)), f"src/speechpipe/{name} is back"


def test_no_speechpipe_folder_at_the_root():
    """`python -c`, `python -m` and the pipeline's node commands put the working folder first on
    the path: a speechpipe/ there would be imported instead of the installed package."""
    for name in ("speechpipe", "speechpipe.py"):
        assert not os.path.exists(os.path.join(REPO, name)), f"{name} at the repository root shadows the package"


def _bare_imports(path: str, roots, repo: str = REPO) -> list:
    with open(os.path.join(repo, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        found += [f"{path}:{node.lineno}: {name}" for name in names if name.split(".")[0] in roots]
    return found


def test_no_module_imports_a_root_package_by_its_folder_name():
    roots = set(root_packages())
    files = _python_files()
    assert "pipeline/tfx_pipeline.py" in files and "src/speechpipe/cli.py" in files
    found = [hit for path in files for hit in _bare_imports(path, roots)]
    assert not found, "import them as speechpipe.<name>:\n" + "\n".join(found)


def test_the_bare_import_scan_finds_what_it_looks_for(tmp_path):
    """The scan above, on a file that does what it forbids (and what it allows)."""
    source = (
        "import pipeline\n"
        "import components.feature_gen as fg\n"
        "from schemas import x\n"
        "from pipeline.tfx_pipeline import create_pipeline\n"
        "import importlib\n"
        "importlib.import_module('components.ctc_trainer')\n"
        "import speechpipe.pipeline\n"
        "from speechpipe.components import feature_gen\n"
        "from . import pipeline as here\n"
        "import pipelines\n"
    )
    (tmp_path / "bad.py").write_text(source, encoding="utf-8")
    found = _bare_imports("bad.py", set(root_packages()), repo=str(tmp_path))
    assert [hit.split(":")[1] for hit in found] == ["1", "2", "3", "4", "6"]


def test_check_install_knows_the_root_packages():
    assert tuple(_check_install().ROOT_PACKAGES) == root_packages()


def test_check_install_lists_every_module_of_the_package():
    """Run in this (editable) environment, where the root packages are not under speechpipe's
    folder: its module list is every module in the checkout, src/speechpipe and the root folders."""
    expected = {
        path[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for path in package_files()
        if path.endswith(".py")
    }
    assert {f"speechpipe.{name}" for name in root_packages()} <= expected
    assert "speechpipe.pipeline.tfx_pipeline" in expected and "speechpipe.jobs.features_job" in expected
    listed = set(_check_install().all_modules())
    assert listed == expected, (sorted(expected - listed), sorted(listed - expected))


def test_the_setup_file_sdist_holds_the_whole_package(tmp_path):
    """Beam's --setup_file (IMAGE_SETUP_FILE on a cluster) builds an sdist of the image's copy of
    the repository and installs it on every worker: built the same way from the build context,
    it holds every module and data file of the package, and MANIFEST.in names no stale path."""
    context = tmp_path / "context"
    build_context(str(context))
    dist = tmp_path / "dist"
    done = run([sys.executable, "setup.py", "sdist", "--dist-dir", str(dist)], cwd=str(context), env=user_env())
    assert "no files found matching" not in done.stdout + done.stderr, done.stdout + done.stderr
    (sdist,) = os.listdir(dist)
    with tarfile.open(dist / sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    missing = set(package_files().values()) - names
    assert not missing, sorted(missing)
    assert {"setup.py", "pyproject.toml", "requirements.in", "requirements.lock", "MANIFEST.in", "README.md"} <= names


@pytest.mark.parametrize("name", ["pipeline", "components", "schemas"])
def test_a_root_package_imports_as_part_of_speechpipe(name):
    """In this environment too (editable): speechpipe.<name> is the root folder."""
    module = importlib.import_module(f"speechpipe.{name}")
    assert os.path.realpath(os.path.dirname(module.__file__)) == os.path.realpath(os.path.join(REPO, name))
