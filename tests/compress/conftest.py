"""Tiny random-weight models for the compression tests (real transformers classes, saved as folders)."""

import pytest
import torch


def make_llama(path, tokenizer, layers=3, hidden=64, heads=4, kv_heads=2, intermediate=128, seed=0, vocab=None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab or len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      head_dim=hidden // heads, max_position_embeddings=512, rope_theta=10000.0,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the init's 0.02 so quantisation/pruning errors are visible
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(5.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


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
    return make_llama(tmp_path_factory.mktemp("tiny-smol"), smol_tokenizer)


@pytest.fixture(scope="session")
def tiny_word_llama(tmp_path_factory):
    """A 3-block random Llama with edgeft's word-level test tokenizer (fast; no model download)."""
    from edgeft.paths import DATASETS_DIR
    from edgeft.testing import tiny_tokenizer

    wiki = DATASETS_DIR / "lm" / "wikitext-2"
    text = (wiki / "valid.txt").read_text()[:40000] + (wiki / "test.txt").read_text()[:40000]
    return make_llama(tmp_path_factory.mktemp("tiny-word"), tiny_tokenizer("llama", text))
