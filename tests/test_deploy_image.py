"""deploy/Dockerfile and /.dockerignore, read as text (tests/test_deploy_image_steps.py runs the
build stage's steps). The image is built from the lock with the lock's uv, for the Python and Beam
versions the lock pins, installs the project where the compiled pipeline looks for it, runs as a
non-root user and starts Beam's worker boot program; the build context lets in the project and
nothing else."""

import os
import re
from importlib import resources

import pytest

from speechpipe.pipeline.kubeflow_v2_runner import IMAGE_ROOT, IMAGE_SCHEMA_FILE, IMAGE_SETUP_FILE
from tests.product import REPO, in_build_context, root_packages


def _read(*path: str) -> str:
    with open(os.path.join(REPO, *path), encoding="utf-8") as f:
        return f.read()


def _lock_pin(package: str) -> str:
    found = re.search(rf"^{re.escape(package)}==([^\s;]+)", _read("requirements.lock"), re.MULTILINE)
    assert found, package
    return found.group(1)


DOCKERFILE = _read("deploy", "Dockerfile")
STEPS = _read("deploy", "image_steps.sh")  # the build stage's steps (tests/test_deploy_image_steps.py runs them)


def _arg(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)", DOCKERFILE, re.MULTILINE).group(1)


def test_the_image_has_the_locked_python_and_beam():
    from packaging.specifiers import SpecifierSet

    python = _arg("PYTHON_VERSION")
    assert SpecifierSet(re.search(r'python_requires="([^"]+)"', _read("setup.py")).group(1)).contains(python)
    # Dataflow and Flink boot workers with the SDK container of the submitting Beam release.
    assert _arg("BEAM_VERSION") == _lock_pin("apache-beam")
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam" in DOCKERFILE
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in DOCKERFILE


def test_the_image_is_built_from_the_lock():
    assert "COPY requirements.lock ./" in DOCKERFILE
    assert '"uv==$(lock_pin uv)"' in STEPS  # uv at the lock's version
    assert 'uv" pip sync --python "$VENV/bin/python" requirements.lock' in STEPS
    # The CUDA libraries come as tensorflow's extra at the lock's tensorflow version.
    assert '"tensorflow[$TF_EXTRA]==$(lock_pin tensorflow)"' in STEPS
    assert _arg("TF_EXTRA") == "and-cuda"
    assert "ENV VENV=/opt/venv" in DOCKERFILE


def test_the_project_is_installed_where_the_pipeline_reads_it():
    assert f"WORKDIR {IMAGE_ROOT}" in DOCKERFILE
    assert "COPY . ." in DOCKERFILE  # the build context lands in IMAGE_ROOT
    assert f"COPY --from=build {IMAGE_ROOT} {IMAGE_ROOT}" in DOCKERFILE
    assert "--no-deps --no-cache ." in STEPS  # installed, not editable


@pytest.mark.parametrize("image_path", [IMAGE_SCHEMA_FILE, IMAGE_SETUP_FILE], ids=["schema", "setup"])
def test_what_the_nodes_read_in_the_image_is_there(image_path):
    """The compiled pipeline's nodes read the TFMD schema, and Beam's --setup_file builds setup.py,
    at these paths in the image: IMAGE_ROOT holds the build context, so each must be a file of the
    repository that .dockerignore lets in (and that the project step does not delete)."""
    assert image_path.startswith(IMAGE_ROOT + "/"), image_path
    relative = os.path.relpath(image_path, IMAGE_ROOT)
    assert os.path.isfile(os.path.join(REPO, relative)), f"{relative} is not in the repository"
    assert in_build_context(relative), f".dockerignore keeps {relative} out of the image"
    project_step = re.search(r"^step_project\(\) \{\n(.*?)^\}", STEPS, re.MULTILINE | re.DOTALL).group(1)
    removed = " ".join(re.findall(r"rm -rf (.*)", project_step)).split()
    assert relative not in removed and relative.split("/")[0] not in removed, f"the project step deletes {relative}"


def test_the_schema_in_the_image_is_the_packaged_one():
    """The nodes on a cluster read IMAGE_SCHEMA_FILE; `speechpipe run` reads the package's copy."""
    packaged = resources.files("speechpipe.schemas").joinpath("features.pbtxt").read_text(encoding="utf-8")
    assert _read(*os.path.relpath(IMAGE_SCHEMA_FILE, IMAGE_ROOT).split("/")) == packaged


def test_the_image_runs_as_a_non_root_user():
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.MULTILINE)
    assert users == ["10001:10001"]
    assert "useradd --uid 10001" in DOCKERFILE


def test_the_build_context_is_the_project_only():
    lines = [line.strip() for line in _read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"  # everything is out unless let in
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    # The package's source tree, what setup.py and the sdist build from, the lock, and the steps.
    assert allowed == {
        "src",
        *root_packages(),  # pipeline/, components/, schemas/: installed as speechpipe.*
        "setup.py",
        "pyproject.toml",
        "MANIFEST.in",
        "README.md",
        "requirements.in",
        "requirements.lock",
        "deploy/image_steps.sh",
        "deploy/check_install.py",
    }
    for heavy in (".venv", ".git", "speechpipe_home", "bench", "tests"):
        assert heavy not in allowed
