"""--grad-checkpoint: the backprop methods recompute each block's activations in the backward (edgeft.train.recompute),
training the same weights with fewer tensors kept; methods it cannot help, --compile and launch refuse it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from edgeft.errors import ConfigError
from edgeft.runtime.spec import RuntimeTrain
from edgeft.train import recompute
from edgeft.train.recipe import config_from_dict, run_finetune


def _cfg(model, out, method="lora", **train):
    return config_from_dict({
        "model": str(model), "method": method, "out": str(out), "eval_before": False,
        "task": {"name": "sst2", "train_samples": 16, "dev_samples": 4, "max_length": 24},
        "train": {"epochs": 1, "batch_size": 8, "lr": 5e-3, **train}})


@pytest.mark.parametrize("method", ["lora", "full"])
def test_recomputed_blocks_train_the_same_weights(tmp_path, tiny_llama, monkeypatch, method):
    import transformers.modeling_utils as hf  # where gradient_checkpointing_enable takes torch's checkpoint from

    calls = []
    real = hf.checkpoint
    monkeypatch.setattr(hf, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    weights = []
    for on in (False, True):
        out = tmp_path / f"run-{on}"
        run_finetune(_cfg(tiny_llama, out, method, grad_checkpoint=on))
        weights.append({k: v for f in sorted((out / "adapter").glob("*.safetensors")) for k, v in load_file(f).items()})
        assert bool(calls) == on  # the blocks were recomputed only when asked
    assert weights[0].keys() == weights[1].keys() and weights[0]
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-5, atol=1e-6)


def test_recomputed_blocks_keep_fewer_tensors_for_the_backward(tiny_llama):
    """What the memory saving is made of: the bytes autograd keeps between the forward and the backward."""
    from transformers import AutoModelForCausalLM

    def kept_bytes(model) -> int:
        total = []

        def pack(t):
            total.append(t.numel() * t.element_size())
            return t

        ids = torch.randint(0, model.config.vocab_size, (4, 64))
        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids).loss.backward()
        return sum(total)

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    kept = kept_bytes(model)
    recompute.enable(model)
    assert kept_bytes(model) < 0.6 * kept


def test_methods_without_a_backward_through_the_backbone_refuse_it(tmp_path, tiny_llama):
    for method in ("mezo", "pac"):
        with pytest.raises(ConfigError, match=f"--grad-checkpoint.*{method} keeps no backbone activations"):
            _cfg(tiny_llama, tmp_path / "r", method, grad_checkpoint=True)
    with pytest.raises(ConfigError, match="with --compile"):
        _cfg(tiny_llama, tmp_path / "r", grad_checkpoint=True, compile="default")
    with pytest.raises(ValueError, match="grad_checkpoint is a knob of `edgeft finetune` only"):
        RuntimeTrain(grad_checkpoint=True)
