"""Installs speechpipe; also the file Beam's --setup_file ships to remote workers."""
from setuptools import setup

# The design card puts pipeline/, components/ and schemas/ at the top of the repository; they are
# installed under the speechpipe namespace so that no generic top-level name is claimed.
_MAPPED = {"speechpipe.pipeline": "pipeline", "speechpipe.components": "components", "speechpipe.schemas": "schemas"}


def _packages():
    from setuptools import find_packages

    found = ["speechpipe"] + [f"speechpipe.{p}" for p in find_packages("speechpipe")]
    for name, folder in _MAPPED.items():
        found += [name] + [f"{name}.{p}" for p in find_packages(folder)]
    return found


setup(
    name="speechpipe",
    version="0.1.0",
    packages=_packages(),
    package_dir={"speechpipe": "speechpipe", **_MAPPED},
    package_data={"speechpipe.schemas": ["*.json", "*.pbtxt"], "speechpipe.corpus": ["*.txt"]},
    python_requires=">=3.9,<3.11",
    entry_points={"console_scripts": ["speechpipe=speechpipe.cli:main"]},
)
