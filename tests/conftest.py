import os

import pytest

from tests.helpers import make_tiny_corpus

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> str:
    """The tiny demo corpus, synthesised once per test session."""
    return make_tiny_corpus(str(tmp_path_factory.mktemp("tiny_corpus")))
