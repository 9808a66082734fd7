import pytest

from edgeft.testing import make_tiny_model


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")
