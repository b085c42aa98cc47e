"""The image's build, run as a script: no Docker daemon is available, so the Dockerfile's build
stage calls deploy/image_steps.sh for every step, and this test runs the same steps from a copy of
the build context (what .dockerignore lets in) into a scratch prefix: the same lock, the same
install, the same import check, from the same kind of working folder. The CPU image is built
(TF_EXTRA empty): the CUDA wheels are 3 GB from PyPI and change nothing the check looks at."""

import os
import re

import pytest

from tests.product import REPO, base_python, build_context, package_files, run, user_env

STEPS = ["venv", "deps", "cuda", "project", "check"]


def _dockerfile() -> str:
    with open(os.path.join(REPO, "deploy", "Dockerfile"), encoding="utf-8") as f:
        return f.read()


def _build_stage(text: str) -> str:
    return text.split(" AS build", 1)[1].split("\nFROM ", 1)[0]


def test_the_build_stage_installs_only_through_the_steps_script():
    stage = _build_stage(_dockerfile())
    runs = re.findall(r"^RUN (.*(?:\\\n.*)*)", stage, re.MULTILINE)
    called = []
    for command in runs:
        found = re.findall(r"sh deploy/image_steps\.sh ((?:\w+ ?)+)", command)
        assert found, f"a RUN line that is not a step of deploy/image_steps.sh: {command!r}"
        called += found[0].split()
    assert called == STEPS  # every step, once, in order
    # The script is in the image's context before the first step runs, and the check runs last,
    # after the whole context (`COPY . .`) is in.
    assert stage.index("COPY deploy/image_steps.sh") < stage.index("image_steps.sh venv")
    assert stage.index("COPY . .") < stage.index("image_steps.sh project check")


def test_the_build_context_lets_in_what_the_steps_use(tmp_path):
    copied = set(build_context(str(tmp_path)))
    assert {
        "requirements.lock",
        "setup.py",
        "pyproject.toml",
        "MANIFEST.in",
        "requirements.in",
        "README.md",
        "deploy/image_steps.sh",
        "deploy/check_install.py",
        "src/speechpipe/cli.py",
        "pipeline/tfx_pipeline.py",
        "components/feature_gen.py",
        "schemas/features.pbtxt",
        "src/speechpipe/corpus/sentences_de.txt",
    } <= copied
    # Every module and data file of the package, under src/ and in the root packages.
    missing = set(package_files().values()) - copied
    assert not missing, sorted(missing)
    for heavy in (".venv/", ".git/", "speechpipe_home/", "bench/", "tests/", "docs/"):
        assert not any(path.startswith(heavy) for path in copied), heavy


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the steps themselves may take 1200 s (`run`'s timeout below)
def test_the_image_steps_build_a_working_environment(tmp_path):
    from speechpipe.pipeline.kubeflow_v2_runner import IMAGE_ROOT, IMAGE_SCHEMA_FILE, IMAGE_SETUP_FILE

    context = tmp_path / "opt-speechpipe"  # stands for the image's WORKDIR, IMAGE_ROOT
    build_context(str(context))
    venv = tmp_path / "opt-venv"
    env = user_env(
        VENV=str(venv),
        PYTHON=base_python(),
        TF_EXTRA="",
        # Links from uv's cache and no bytecode: the same packages, built faster than the
        # image's copies (the image's layers cannot link into a cache mount).
        UV_LINK_MODE="hardlink",
        UV_COMPILE_BYTECODE="0",
    )
    done = run(["sh", "deploy/image_steps.sh", *STEPS], cwd=str(context), env=env, timeout=1200)
    assert "modules imported" in done.stdout, done.stdout + done.stderr
    assert f"speechpipe from {os.path.realpath(venv)}" in done.stdout
    # What the compiled pipeline's nodes and Beam's --setup_file read in the image is there.
    for image_path in (IMAGE_SCHEMA_FILE, IMAGE_SETUP_FILE):
        assert os.path.isfile(os.path.join(context, os.path.relpath(image_path, IMAGE_ROOT))), image_path
    assert not os.path.exists(context / "build"), "the project step leaves no build folder in the image"


def test_a_source_tree_that_shadows_the_package_is_caught(tmp_path):
    """The check imports from the working folder first, as `python -c` there does: a folder named
    speechpipe in it (the old layout's failure) is reported, not hidden."""
    import subprocess
    import sys

    (tmp_path / "speechpipe").mkdir()
    (tmp_path / "speechpipe" / "__init__.py").write_text("")
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "deploy", "check_install.py"), "--expect-prefix", sys.prefix],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        env=user_env(),
    )
    assert done.returncode == 1
    assert f"speechpipe is imported from {os.path.realpath(tmp_path / 'speechpipe')}" in done.stderr
