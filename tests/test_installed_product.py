"""What a user installs: the wheel and the sdist (the sdist is what Beam's --setup_file ships to
Dataflow and Flink workers), each installed into a fresh venv outside the repository, then used
from a folder outside it: `speechpipe --help`, a tiny corpus, the feature job and a tiny pipeline
run. The checkout is never on the path, so a module or data file the distributions lack fails.
The import check and `--help` also run from the repository root, where the root folders
pipeline/, components/ and schemas/ are first on the path: they must not shadow the installed
package (`deploy/check_install.py` checks where every module comes from)."""

import json
import os
import shutil
import tarfile
import zipfile

import pytest

from tests.product import LOCK, REPO, build_distributions, locked_venv, package_files, root_packages, run, user_env, uv


@pytest.fixture(scope="module")
def distributions(tmp_path_factory):
    return build_distributions(str(tmp_path_factory.mktemp("dist")))


def test_the_wheel_holds_every_module_and_data_file(distributions):
    with zipfile.ZipFile(distributions["wheel"]) as wheel:
        listed = {n for n in wheel.namelist() if not n.startswith("speechpipe-")}
    # src/speechpipe/x is speechpipe/x in the wheel; the root packages' pipeline/x is
    # speechpipe/pipeline/x, and so on.
    files = package_files()
    expected = set(files)
    assert {
        "speechpipe/corpus/sentences_de.txt",
        "speechpipe/schemas/features.pbtxt",
        "speechpipe/schemas/phones_de.json",
        "speechpipe/pipeline/tfx_pipeline.py",
        "speechpipe/components/feature_gen.py",
        "speechpipe/corpus/synth.py",
    } <= expected
    assert files["speechpipe/pipeline/tfx_pipeline.py"] == "pipeline/tfx_pipeline.py"
    assert files["speechpipe/schemas/features.pbtxt"] == "schemas/features.pbtxt"
    assert files["speechpipe/corpus/synth.py"] == "src/speechpipe/corpus/synth.py"
    assert listed == expected, (sorted(expected - listed), sorted(listed - expected))
    # Nothing of the root folders lands outside speechpipe/ (a top-level `pipeline` package).
    assert not {n.split("/")[0] for n in listed} - {"speechpipe"}
    # Every folder of the package is a real package (find_packages skips one without __init__).
    folders = {os.path.dirname(n) for n in expected}
    assert {f + "/__init__.py" for f in folders} <= expected
    assert {f"speechpipe/{name}" for name in root_packages()} <= folders


def test_the_sdist_holds_the_package_and_what_rebuilds_it(distributions):
    with tarfile.open(distributions["sdist"]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"setup.py", "pyproject.toml", "requirements.in", "requirements.lock", "README.md"} <= names
    # The sdist keeps the repository's layout (setup.py's package_dir maps it on install).
    missing = set(package_files().values()) - names
    assert not missing, sorted(missing)


def test_the_wheel_declares_the_runtime_requirements(distributions):
    with zipfile.ZipFile(distributions["wheel"]) as wheel:
        metadata = wheel.read("speechpipe-0.1.0.dist-info/METADATA").decode()
    required = {
        line.split(":", 1)[1].strip().split(";")[0].replace(" ", "")
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    }
    assert {
        "tfx[kfp]==1.16.0",
        "tensorflow==2.16.2",
        "apache-beam[gcp]",
        "mlflow",
        "librosa",
        "espeakng-loader",
    } <= required
    assert not {"pytest", "pytest-timeout", "uv"} & required  # test tools are not the package's


@pytest.mark.e2e
# About 4 min each on a 2-core machine (a locked venv, the install, a tiny pipeline run); the
# first also builds both distributions (the module's fixture).
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_distribution_runs_outside_the_repository(kind, distributions, tmp_path):
    venv = locked_venv(str(tmp_path / "venv"))
    # The distribution with its declared dependencies, resolved within the lock: every one of them
    # must already be satisfied by the locked environment.
    run(
        [uv(), "pip", "install", "--python", os.path.join(venv, "bin", "python"), "-c", LOCK, distributions[kind]],
        cwd=str(tmp_path),
        env=user_env(),
    )
    run([uv(), "pip", "check", "--python", os.path.join(venv, "bin", "python")], cwd=str(tmp_path), env=user_env())
    work = tmp_path / "work"
    work.mkdir()
    env = user_env(venv)
    speechpipe = os.path.join(venv, "bin", "speechpipe")

    checked = run(
        [
            os.path.join(venv, "bin", "python"),
            os.path.join(REPO, "deploy", "check_install.py"),
            "--expect-prefix",
            venv,
        ],
        cwd=str(work),
        env=env,
    )
    assert "modules imported" in checked.stdout
    assert "usage: speechpipe" in run([speechpipe, "--help"], cwd=str(work), env=env).stdout
    # The same from the repository root, first on the path there: its pipeline/, components/ and
    # schemas/ folders (and no speechpipe/ folder) must not shadow the installed package.
    from_root = run(
        [
            os.path.join(venv, "bin", "python"),
            os.path.join(REPO, "deploy", "check_install.py"),
            "--expect-prefix",
            venv,
        ],
        cwd=REPO,
        env=env,
    )
    assert "modules imported" in from_root.stdout
    assert f"speechpipe from {os.path.realpath(venv)}" in from_root.stdout
    assert "usage: speechpipe" in run([speechpipe, "--help"], cwd=REPO, env=env).stdout

    # --utterances 3 with the default sessions (4): sessions follow the utterances.
    run(
        [
            speechpipe,
            "corpus",
            "synth",
            "--out",
            "corpus",
            "--speakers",
            "4",
            "--utterances",
            "3",
            "--seed",
            "5",
            "--no-progress",
        ],
        cwd=str(work),
        env=env,
    )
    features = run(
        [
            speechpipe,
            "features",
            "--input",
            "corpus/manifest.jsonl",
            "--out",
            "features",
            "--direct_running_mode=in_memory",
        ],
        cwd=str(work),
        env=env,
    )
    with open(work / "features" / "summary.json", encoding="utf-8") as f:
        summary = json.load(f)
    assert summary["inputs"] == 12 and sum(summary["good"].values()) == 12, (summary, features.stdout)
    assert summary["dead_letter"]["total"] == 0

    done = run(
        [
            speechpipe,
            "run",
            "--home",
            "home",
            "--span",
            "corpus/manifest.jsonl",
            "--in-memory",
            "--no-speaker",
            "--lstm-units",
            "8",
            "--max-epochs",
            "1",
            "--max-minutes",
            "1",
            "--batch-size",
            "4",
            "--patience",
            "1",
            "--max-per",
            "10",
        ],
        cwd=str(work),
        env=env,
    )
    assert "RegistryPusher: done" in done.stdout, done.stdout
    assert "pushed" in done.stdout
    # One line per event: no log line twice, none of Beam's worker start-up warnings, none of
    # TensorFlow's C++ start-up errors, no dependency FutureWarnings.
    said = done.stdout + done.stderr
    for noise in (
        "INFO:speechpipe",
        "Discarding unparseable args",
        "semi_persistent_directory",
        "Unable to register",
        "FutureWarning",
    ):
        assert noise not in said, (noise, said[-4000:])
    epochs = [line for line in done.stdout.splitlines() if "epoch 1:" in line]
    assert len(epochs) == 1, done.stdout
    shutil.rmtree(venv)  # 3-4 GB of links and copies: not kept for pytest's last three sessions
