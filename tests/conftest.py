"""The tests' one set of tiny-model fixtures (built by tests/tiny_models.py, once per session), and the set-up of
`make test`'s two pytest-xdist workers."""

import os

import pytest

import tiny_models

# Under pytest-xdist (`make test` runs `-n 2` on 2 cores) each worker gets one torch thread, and so do the processes
# its tests start (unless a test sets their threads itself): two workers at torch's default of one thread per core
# would oversubscribe the cores. EDGEFT_TEST_THREADS overrides the 1.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _XDIST_WORKER:
    _threads = os.environ.get("EDGEFT_TEST_THREADS", "1")
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _threads
    import torch

    torch.set_num_threads(int(_threads))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist's controller: hand each worker the $COLUMNS and $LINES the run was started with. pytest imports
    readline before it captures output (_pytest.capture._readline_workaround), and GNU readline writes COLUMNS=80
    and LINES=24 into the process's C environment: os.environ does not show them, the workers inherit them, and
    edgeft's consoles would then print piped tables 80 columns wide (edgeft.cli.common.wide_console)."""
    node.workerinput["edgeft_env"] = {k: os.environ.get(k) for k in ("COLUMNS", "LINES")}


def pytest_configure(config):
    for key, value in getattr(config, "workerinput", {}).get("edgeft_env", {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_collection_modifyitems(config, items):
    """Under xdist, the `slow` tests first (a stable sort: every worker collects the same order), so the longest
    ones (GPTQ on SmolLM2, the Flower deployments) start early instead of leaving one worker alone at the end."""
    if _XDIST_WORKER:
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
