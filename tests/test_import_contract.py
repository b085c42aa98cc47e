"""The layers contract (pyproject.toml [tool.importlinter], docs/architecture.md) holds on the
tree, and fails on an upward import, also one hidden inside a function."""

import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _contract():
    spec = importlib.util.spec_from_file_location("import_contract", os.path.join(REPO, ".ci", "import_contract.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def contract():
    return _contract()


def test_the_tree_keeps_its_layers(contract, tmp_path):
    result = contract.lint(contract.lay_out(str(tmp_path)), capture=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("io/storage.py", "import speechpipe.pipeline.run_config\n"),  # io may not know the pipeline
        ("jobs/features_job.py", "def _hidden():\n    from speechpipe.components import feature_gen\n"),
        ("speakers/trials.py", "from speechpipe.phones import inventory\n"),  # siblings stay apart
    ],
)
def test_an_upward_import_breaks_the_contract(contract, tmp_path, module, line):
    layout = contract.lay_out(str(tmp_path))
    with open(os.path.join(layout, "speechpipe", module), "a", encoding="utf-8") as f:
        f.write("\n\n" + line)
    result = contract.lint(layout, capture=True)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout, result.stdout
