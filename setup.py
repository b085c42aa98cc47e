"""Installs speechpipe; also the file Beam's --setup_file ships to remote workers.

The design card's folders `pipeline/`, `components/` and `schemas/` sit at the repository root and
install as `speechpipe.pipeline`, `speechpipe.components` and `speechpipe.schemas`; the rest of the
package lives under src/. No folder at the root is named `speechpipe`, so the root never shadows
the installed package: the checkout, the wheel, the sdist and the image all import the same tree. Its dependencies are
the top-level requirements of requirements.in (the lock pins them for every install we make)."""

import os

from setuptools import find_packages, setup

_HERE = os.path.dirname(os.path.abspath(__file__))
_DEV_MARKER = "# ---- test and dev tools"
# Sub-packages of speechpipe kept at the repository root (the design card's layout).
_ROOT_PACKAGES = ("pipeline", "components", "schemas")


def _runtime_requirements():
    """requirements.in above its test-and-dev section, without comments."""
    found = []
    with open(os.path.join(_HERE, "requirements.in"), encoding="utf-8") as f:
        for line in f:
            if line.startswith(_DEV_MARKER):
                break
            line = line.split("#", 1)[0].strip()
            if line:
                found.append(line)
    return found


setup(
    name="speechpipe",
    version="0.1.0",
    description="A distributed speech data-and-training pipeline: Beam features, TFX training, MLflow registry",
    long_description=open(os.path.join(_HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages("src") + [f"speechpipe.{name}" for name in _ROOT_PACKAGES],
    package_dir={"": "src", **{f"speechpipe.{name}": name for name in _ROOT_PACKAGES}},
    package_data={"speechpipe.schemas": ["*.json", "*.pbtxt"], "speechpipe.corpus": ["*.txt"]},
    python_requires=">=3.9,<3.11",
    install_requires=_runtime_requirements(),
    entry_points={"console_scripts": ["speechpipe=speechpipe.cli:main"]},
)
