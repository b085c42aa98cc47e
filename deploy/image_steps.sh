#!/bin/sh
# The build steps of deploy/Dockerfile, one function per image layer. The Dockerfile runs each step
# (`RUN sh deploy/image_steps.sh deps`), and tests/test_deploy_image_steps.py runs the same steps
# into a scratch prefix from a copy of the build context, so the image and its check cannot drift.
#
#   sh deploy/image_steps.sh STEP...     steps: venv deps cuda project check (in that order)
#
# Run from the build context's root (the Dockerfile's WORKDIR). Settings, from the environment:
#   VENV       where the environment goes (the image: /opt/venv)
#   PYTHON     the interpreter that creates it (the image: the base image's python)
#   TF_EXTRA   TensorFlow's extra for the CUDA wheels (`and-cuda`); empty for a CPU-only image
set -eu

VENV="${VENV:-/opt/venv}"
PYTHON="${PYTHON:-python}"
TF_EXTRA="${TF_EXTRA:-}"
# A copy (not a hard link into uv's cache, which a later layer does not have), bytecode compiled
# once at build time (every Beam worker and pipeline node then imports from .pyc), and never a
# Python that uv would download.
export UV_LINK_MODE="${UV_LINK_MODE:-copy}"
export UV_COMPILE_BYTECODE="${UV_COMPILE_BYTECODE:-1}"
export UV_PYTHON_DOWNLOADS=never
export PIP_DISABLE_PIP_VERSION_CHECK=1

lock_pin() {  # the version requirements.lock pins for package $1
    sed -n "s/^$1==\([^ ;]*\).*/\1/p" requirements.lock | head -n 1
}

# uv at the version the lock pins, in a fresh venv. pip stays in it: Beam's boot program
# pip-installs what a job stages (--setup_file).
step_venv() {
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --no-cache-dir "uv==$(lock_pin uv)"
}

# Exactly the locked packages, as `make env` installs them.
step_deps() {
    "$VENV/bin/uv" pip sync --python "$VENV/bin/python" requirements.lock
}

# The CUDA and cuDNN wheels TensorFlow was built against, at the lock's TensorFlow version.
step_cuda() {
    if [ -n "$TF_EXTRA" ]; then
        "$VENV/bin/uv" pip install --python "$VENV/bin/python" "tensorflow[$TF_EXTRA]==$(lock_pin tensorflow)"
    fi
}

# The project, built and installed (not editable); its dependencies are already the locked ones.
step_project() {
    "$VENV/bin/uv" pip install --python "$VENV/bin/python" --no-deps --no-cache .
    rm -rf build src/*.egg-info
}

# What the image must answer before it is pushed: every module of the installed package imports
# (from this folder, so a source tree here would show up as shadowing), its data files are there,
# the console script runs, pip is present and the environment is consistent.
step_check() {
    "$VENV/bin/python" -m pip --version
    "$VENV/bin/python" deploy/check_install.py --expect-prefix "$VENV"
    "$VENV/bin/speechpipe" --help >/dev/null
    "$VENV/bin/uv" pip check --python "$VENV/bin/python"
}

[ "$#" -gt 0 ] || { echo "usage: $0 STEP... (venv deps cuda project check)" >&2; exit 2; }
for step in "$@"; do
    case "$step" in
        venv|deps|cuda|project|check) echo "== image step: $step" >&2; "step_$step" ;;
        *) echo "unknown image step: $step (venv deps cuda project check)" >&2; exit 2 ;;
    esac
done
