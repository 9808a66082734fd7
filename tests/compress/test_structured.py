"""LLM-Pruner-style structured pruning: importance finds dead groups; the cut model stays consistent."""

import pytest
import torch

from edgeft.compress.calibration import calibration_batches
from edgeft.compress.prune import apply_structured, plan_structured
from edgeft.compress.source import open_model
from edgeft.compress.registry import StepContext, get_step
from edgeft.errors import ConfigError, ModelError
from edgeft.models import load_backbone

from .helpers import logits_of


@pytest.fixture
def llama(tiny_word_llama):
    return load_backbone(str(tiny_word_llama))


@pytest.mark.parametrize("importance", ["param_first", "vectorize", "param_second", "param_mix"])
def test_groups_without_weights_are_pruned_first(llama, importance):
    model = llama.model
    layer = model.model.layers[1]
    with torch.no_grad():  # channel 7 and KV group 1 contribute nothing
        layer.mlp.gate_proj.weight[7] = 0
        layer.mlp.up_proj.weight[7] = 0
        layer.mlp.down_proj.weight[:, 7] = 0
        for proj, rows in ((layer.self_attn.q_proj, slice(32, 64)), (layer.self_attn.k_proj, slice(16, 32)),
                           (layer.self_attn.v_proj, slice(16, 32))):
            proj.weight[rows] = 0
        layer.self_attn.o_proj.weight[:, 32:64] = 0
    batches = calibration_batches("wikitext2", llama.tokenizer, "causal_lm", 4, 32, batch_size=2)
    plan, _ = plan_structured(model, batches, 0.5, range(1, 2), importance, round_to=1)
    if importance in ("param_first", "param_second"):  # exactly zero importance: always the first to go
        assert 7 not in plan.keep_channels[1]
        assert plan.keep_kv_groups[1] == [0]
    assert len(plan.keep_channels[1]) == 64 and len(plan.keep_kv_groups[1]) == 1
    apply_structured(model, plan)
    assert layer.mlp.down_proj.in_features == 64 and layer.self_attn.o_proj.in_features == 32
    assert torch.isfinite(logits_of(model)).all()


def test_uniform_pruning_updates_the_config(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    batches = calibration_batches("wikitext2", llama.tokenizer, "causal_lm", 2, 32, batch_size=2)
    plan, _ = plan_structured(llama.model, batches, 0.5, range(3), "param_first", round_to=32)
    apply_structured(llama.model, plan)
    cfg = llama.model.config
    assert (cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (64, 2, 1, 16)
    llama.model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.allclose(logits_of(again), logits_of(llama.model), atol=1e-5)


def test_prune_refuses_what_it_cannot_do(tiny_word_llama, tiny_bert):
    step, o = get_step("prune", {"ratio": 0.2})
    with pytest.raises(ConfigError, match="supports Llama-family"):
        step.check_input(open_model(str(tiny_bert)))
    with pytest.raises(ConfigError, match="block range"):
        step.blocks(3, get_step("prune", {"first_block": 2, "last_block": 2})[1])
    with pytest.raises(ConfigError, match="must be in"):
        plan_structured(load_backbone(str(tiny_word_llama)).model, [], 1.0, range(1), "param_first")
    src = open_model(str(tiny_word_llama))
    get_step("magnitude", {})[0].apply(src, StepContext("wikitext2"), get_step("magnitude", {})[1])
    with pytest.raises(ConfigError, match="already sparse"):
        step.check_input(src)


def test_non_uniform_model_cannot_become_a_plain_transformers_folder(tiny_word_llama, tmp_path):
    from edgeft.compress.export import export_model
    from edgeft.compress.pipeline import CompressConfig, run_compress

    run_compress(CompressConfig(model=str(tiny_word_llama), method="prune", out=str(tmp_path / "p"),
                                options={"ratio": 0.5, "first_block": 1, "last_block": 2}, calib_samples=2,
                                calib_seq_len=32, eval_wikitext_windows=0, eval_before=False), log=lambda m: None)
    with pytest.raises(ModelError, match="pruned to different sizes"):
        export_model(str(tmp_path / "p"), tmp_path / "hf", "safetensors")
