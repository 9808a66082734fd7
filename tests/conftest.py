"""The tests' one set of tiny-model fixtures (built by tests/tiny_models.py, once per session)."""

import pytest

import tiny_models


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """4-block Llama, fixed word vocabulary."""
    return tiny_models.make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """4-block BERT encoder, fixed word vocabulary."""
    return tiny_models.make_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def sst2_llama(tmp_path_factory):
    """4-block Llama whose vocabulary covers SST-2's frequent words (the runtime tests train on SST-2)."""
    return tiny_models.make_llama(tmp_path_factory.mktemp("sst2-llama"), tiny_models.task_tokenizer("sst2"),
                                  max_positions=256)


@pytest.fixture(scope="session")
def sst2_bert(tmp_path_factory):
    """3-block BERT, SST-2 vocabulary, no dropout (so distributed and single-device losses compare exactly)."""
    return tiny_models.make_bert(tmp_path_factory.mktemp("sst2-bert"), tiny_models.task_tokenizer("sst2"),
                                 layers=3, max_positions=256, dropout=0.0)


@pytest.fixture(scope="session")
def smol_tokenizer():
    """SmolLM2's real byte-level BPE tokenizer (its model folder is fetched once, like every real model)."""
    from transformers import AutoTokenizer

    from edgeft.models.backbone import resolve

    path, _ = resolve("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="session")
def tiny_smol(tmp_path_factory, smol_tokenizer):
    """A 3-block random Llama with SmolLM2's tokenizer: what GGUF export and llama.cpp need."""
    return tiny_models.make_llama(tmp_path_factory.mktemp("tiny-smol"), smol_tokenizer, **tiny_models.COMPRESS_LLAMA)


@pytest.fixture(scope="session")
def tiny_word_llama(tmp_path_factory):
    """A 3-block random Llama with the word-level test tokenizer over WikiText-2 words (fast; no download)."""
    from edgeft.paths import DATASETS_DIR

    wiki = DATASETS_DIR / "lm" / "wikitext-2"
    text = (wiki / "valid.txt").read_text()[:40000] + (wiki / "test.txt").read_text()[:40000]
    return tiny_models.make_llama(tmp_path_factory.mktemp("tiny-word"), tiny_models.word_tokenizer("llama", text),
                                  **tiny_models.COMPRESS_LLAMA)
