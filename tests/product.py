"""Helpers for the tests of what a user installs: fresh virtual environments outside the
repository, the image's build context, and commands run as a user would run them (no checkout on
the path, a working folder of their own)."""

from __future__ import annotations

import ast
import fnmatch
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(REPO, "requirements.lock")
# What the package holds: its modules and the data files it reads (setup.py's package_data).
PACKAGE_SUFFIXES = (".py", ".json", ".pbtxt", ".txt")


def root_packages() -> Tuple[str, ...]:
    """setup.py's _ROOT_PACKAGES (the sub-packages of speechpipe whose folders sit at the
    repository root), read without running setup.py."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_ROOT_PACKAGES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("setup.py defines no _ROOT_PACKAGES")


def package_files() -> Dict[str, str]:
    """Every module and data file of the package in the checkout: {its path in the installed
    package (speechpipe/...): its path in the repository}. src/speechpipe/x is speechpipe/x, and a
    root package's pipeline/x is speechpipe/pipeline/x."""
    sources = {"speechpipe": "src/speechpipe", **{f"speechpipe/{name}": name for name in root_packages()}}
    found = {}
    for installed, source in sources.items():
        top = os.path.join(REPO, source)
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(PACKAGE_SUFFIXES):
                    relative = os.path.relpath(os.path.join(folder, name), top).replace(os.sep, "/")
                    found[f"{installed}/{relative}"] = f"{source}/{relative}"
    return found


def base_python() -> str:
    """The interpreter the test venv was made from (a venv made from a venv would point at it)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return os.path.join(sys.base_prefix, "bin", version)


def uv() -> str:
    """The lock's uv, installed next to this interpreter by `make env`."""
    found = os.path.join(os.path.dirname(sys.executable), "uv")
    return found if os.path.exists(found) else shutil.which("uv") or "uv"


def user_env(venv: str = "", **extra: str) -> Dict[str, str]:
    """The environment of a user's shell: this machine's, less anything that puts the checkout or
    the test venv on the path, with `venv`'s bin first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTEST_CURRENT_TEST")
    }
    test_bin = os.path.dirname(sys.executable)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != os.path.realpath(test_bin)]
    if venv:
        path.insert(0, os.path.join(venv, "bin"))
        env["VIRTUAL_ENV"] = venv
    env["PATH"] = os.pathsep.join(path)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(extra)
    return env


def run(args: Sequence[str], cwd: str, env: Dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs a command; on failure the assertion shows its output."""
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(args)} exited {done.returncode}\n--- stdout\n{done.stdout[-6000:]}"
        f"\n--- stderr\n{done.stderr[-6000:]}"
    )
    return done


def locked_venv(path: str) -> str:
    """A fresh venv at `path` holding exactly the locked packages (uv links them from its cache)."""
    env = user_env(UV_COMPILE_BYTECODE="0")
    run([base_python(), "-m", "venv", path], cwd=os.path.dirname(path), env=env)
    run(
        [uv(), "pip", "sync", "--python", os.path.join(path, "bin", "python"), LOCK], cwd=os.path.dirname(path), env=env
    )
    return path


def build_distributions(out_dir: str) -> Dict[str, str]:
    """The sdist and the wheel, built from the checkout as a release would be: {'sdist', 'wheel'}.
    The wheel is built from the unpacked sdist (uv build's default), not from the checkout, whose
    ignored build/ folder may hold modules the tree no longer has (setuptools copies into it and
    never prunes it); and a file the sdist lacks is then missing from the wheel too."""
    run([uv(), "build", "--out-dir", out_dir, REPO], cwd=out_dir, env=user_env())
    names = os.listdir(out_dir)
    return {
        "sdist": os.path.join(out_dir, next(n for n in names if n.endswith(".tar.gz"))),
        "wheel": os.path.join(out_dir, next(n for n in names if n.endswith(".whl"))),
    }


def dockerignore_rules() -> List[str]:
    with open(os.path.join(REPO, ".dockerignore"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def _ignored(relative: str, rules: List[str]) -> bool:
    """Docker's rule: the last matching line wins; `!` lets a path (and what is under it) back in."""
    ignored = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule[1:] if negated else rule
        pattern = pattern.rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negated
    return ignored


def in_build_context(relative: str) -> bool:
    """Whether .dockerignore lets the repository path `relative` into the image's build context."""
    return not _ignored(relative, dockerignore_rules())


def build_context(dest: str) -> List[str]:
    """Copies what `docker build .` would send (the repository's files that .dockerignore lets in)
    to `dest`; returns their relative paths."""
    rules = dockerignore_rules()
    tracked = subprocess.run(
        ["git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    copied = []
    for relative in sorted(tracked):
        if _ignored(relative, rules) or not os.path.isfile(os.path.join(REPO, relative)):
            continue
        target = os.path.join(dest, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(REPO, relative), target)
        copied.append(relative)
    return copied
