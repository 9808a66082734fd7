"""The compressed folder: packed/sparse/pruned layers survive a save-load round trip; bad files fail clearly."""

import json

import pytest
import torch

from edgeft.compress.source import open_model
from edgeft.compress.registry import StepContext, get_step
from edgeft.compress.store import (MANIFEST, WEIGHTS, decode_sparse, encode_sparse, folder_bytes, load_compressed,
                                   save_compressed)
from edgeft.errors import ConfigError, ModelError


def logits(model, n=24):
    ids = torch.arange(5, 5 + n)[None]
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def apply(path, method, options, out, batches=None):
    src = open_model(str(path))
    step, o = get_step(method, options)
    step.check_input(src)
    step.apply(src, StepContext("wikitext2", batches), o)
    src.manifest.dtype = "float32"
    save_compressed(src.backbone.model, src.backbone.tokenizer, src.manifest, out)
    return src


def test_quantised_folder_is_packed_and_reloads_identically(tiny_word_llama, tmp_path):
    src = apply(tiny_word_llama, "rtn", {"bits": 4, "group_size": 32}, tmp_path / "q")
    model, _, manifest = load_compressed(tmp_path / "q")
    assert torch.equal(logits(model), logits(src.backbone.model))
    assert len(manifest.quantized["modules"]) == 3 * 7
    # 4-bit codes: two per byte, so each packed layer is ~1/8 of its float32 size (plus scales)
    dense = apply(tiny_word_llama, "merge", {}, tmp_path / "d")
    linear_bytes = sum(p.numel() * 4 for n, p in dense.backbone.model.named_parameters() if ".layers." in n
                       and p.dim() == 2)
    saved = folder_bytes(tmp_path / "d") - folder_bytes(tmp_path / "q")
    assert saved > 0.8 * linear_bytes


def test_sparse_folder_stores_only_the_nonzeros(tiny_word_llama, tmp_path):
    src = apply(tiny_word_llama, "magnitude", {"sparsity": 0.5}, tmp_path / "s")
    apply(tiny_word_llama, "merge", {}, tmp_path / "d")
    model, _, manifest = load_compressed(tmp_path / "s")
    assert torch.equal(logits(model), logits(src.backbone.model))
    q = model.model.layers[1].mlp.down_proj.weight
    assert abs(float((q == 0).float().mean()) - 0.5) < 0.01
    assert folder_bytes(tmp_path / "s") < folder_bytes(tmp_path / "d")


def test_sparse_encoding_roundtrip_and_corruption():
    w = torch.randn(7, 13) * (torch.rand(7, 13) > 0.5)
    values, bitmask = encode_sparse(w, torch.float32)
    assert torch.equal(decode_sparse(values, bitmask, (7, 13)), w)
    with pytest.raises(ModelError, match="corrupt"):
        decode_sparse(values[:-1], bitmask, (7, 13))


def test_corrupt_and_foreign_folders_give_clear_errors(tiny_word_llama, tmp_path):
    apply(tiny_word_llama, "rtn", {"bits": 8, "group_size": 32}, tmp_path / "q")
    weights = tmp_path / "q" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_compressed(tmp_path / "q")
    (tmp_path / "q" / MANIFEST).write_text("{not json")
    with pytest.raises(ModelError, match="corrupt manifest"):
        load_compressed(tmp_path / "q")
    (tmp_path / "q" / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="not an edgeft compressed model"):
        load_compressed(tmp_path / "q")


def test_weights_of_another_model_are_refused(tiny_word_llama, tmp_path):
    apply(tiny_word_llama, "rtn", {"bits": 4, "group_size": 32}, tmp_path / "q")
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    cfg["num_hidden_layers"] = 4  # the config now promises a block the weights do not have
    (tmp_path / "q" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="do not fit the config"):
        load_compressed(tmp_path / "q")


@pytest.mark.parametrize("method,options,match", [
    ("gptq", {"bits": 3}, "unsupported quantisation width"),
    ("rtn", {"group_size": 4}, "group of at least 8"),
    ("gptq4", {}, "unknown compression method"),
    ("gptq", {"bitz": 4}, "unknown option"),
    ("sparsegpt", {"pattern": "4:2"}, "0 < N < M"),
    ("magnitude", {"pattern": "2-4"}, "expected N:M"),
])
def test_bad_methods_and_options_are_refused(tiny_word_llama, method, options, match):
    with pytest.raises(ConfigError, match=match):
        src = open_model(str(tiny_word_llama))
        step, o = get_step(method, options)
        step.apply(src, StepContext("wikitext2", []), o)


@pytest.mark.parametrize("method,options,match", [
    ("gptq", {"bits": 3}, "bits=3: unsupported quantisation width"),
    ("rtn", {"group_size": 4}, "group_size=4: use -1"),
    ("sparsegpt", {"pattern": "4:2"}, "0 < N < M"),
    ("magnitude", {"pattern": "2-4"}, "expected N:M"),
])
def test_a_quantiser_width_group_or_sparsity_pattern_is_refused_when_the_options_are_read(method, options, match):
    """Before any model is opened (a 135M model loads for seconds first, and GPTQ's progress bar used to start)."""
    with pytest.raises(ConfigError, match=match):
        get_step(method, options)


def test_quantising_twice_or_after_sparsity_is_refused(tiny_word_llama, tmp_path):
    apply(tiny_word_llama, "rtn", {"bits": 4, "group_size": 32}, tmp_path / "q")
    apply(tiny_word_llama, "magnitude", {"sparsity": 0.5}, tmp_path / "s")
    step, _ = get_step("gptq", {})
    with pytest.raises(ConfigError, match="already quantised"):
        step.check_input(open_model(str(tmp_path / "q")))
    with pytest.raises(ConfigError, match="the input is sparse"):
        step.check_input(open_model(str(tmp_path / "s")))
