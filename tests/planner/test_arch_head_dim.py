"""A config.json that sets its own head_dim (Qwen3: 16 heads x 128 on a hidden size of 1024) prices attention at
heads x head_dim, not at the hidden size: Qwen3-0.6B's projections were counted at half their size."""

from __future__ import annotations

import json

import pytest
import torch

from edgeft.models.arch import arch_from_hf_config, block_params, resolve_arch

QWEN3_LIKE = {"model_type": "qwen3", "hidden_size": 64, "num_attention_heads": 4, "head_dim": 32,
              "num_key_value_heads": 2, "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 128,
              "max_position_embeddings": 256, "tie_word_embeddings": True}


def _real_block_matmul_params(cfg: dict) -> int:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**{k: v for k, v in cfg.items() if k != "model_type"}))
    block = model.model.layers[0]
    return sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Linear))


def test_block_matmul_params_follow_an_explicit_head_dim(tmp_path):
    arch = arch_from_hf_config(QWEN3_LIKE, "qwen3-like")
    assert arch.head_dim == 32 and arch.q_dim == 128 and arch.kv_dim == 64
    assert block_params(arch)[1] == _real_block_matmul_params(QWEN3_LIKE)
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_LIKE))
    assert resolve_arch(str(tmp_path)).q_dim == 128  # the planner's path to the same numbers


def test_a_head_dim_equal_to_hidden_over_heads_changes_nothing():
    plain = {**QWEN3_LIKE, "head_dim": 16}
    without = {k: v for k, v in QWEN3_LIKE.items() if k != "head_dim"}
    assert arch_from_hf_config(plain, "m") == arch_from_hf_config(without, "m")
    assert arch_from_hf_config(plain, "m").explicit_head_dim == 0  # plans and profiles keyed on the arch unchanged
    assert block_params(arch_from_hf_config(plain, "m"))[1] == _real_block_matmul_params(plain)


def test_attention_flops_and_lora_shapes_use_the_query_width():
    from edgeft.methods.peft_methods import lora_shapes
    from edgeft.planner import Workload, analytic_costs

    wide, plain = arch_from_hf_config(QWEN3_LIKE, "m"), arch_from_hf_config({**QWEN3_LIKE, "head_dim": 16}, "m")
    assert dict(zip(["q", "k", "v", "o"], lora_shapes(wide, ("q_proj", "k_proj", "v_proj", "o_proj")))) == {
        "q": (64, 128), "k": (64, 64), "v": (64, 64), "o": (128, 64)}
    work = Workload(method="full", batch=2, seq_len=16)
    extra = analytic_costs(wide, work).fwd[0] - analytic_costs(plain, work).fwd[0]
    more_params = block_params(wide)[1] - block_params(plain)[1]
    assert extra == pytest.approx(2.0 * 2 * 16 * more_params + 4.0 * 2 * 16 * 16 * (128 - 64))
