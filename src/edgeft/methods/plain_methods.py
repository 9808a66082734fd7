"""Full fine-tuning and BitFit: no PEFT wrapper, saved as safetensors of what was trained."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from edgeft.errors import ModelError
from edgeft.methods.base import BlockCost, Method, read_adapter_weights, register_method

HEAD_NAMES = ("classifier", "score")


def _is_head(name: str) -> bool:
    return name.split(".")[0] in HEAD_NAMES


@register_method
class Full(Method):
    """Every parameter trained (the reference the memory-efficient methods are measured against)."""

    name = "full"
    default_lr = 2e-5
    priced_as = "full"
    supports_blockwise = True
    trains_embedding = True

    @classmethod
    def block_cost(cls, arch, workload, dense):
        """Every weight trains: the backward adds each matmul weight's gradient to the input gradients."""
        return BlockCost(trainable=dense.params, fwd=dense.fwd, bwd_pass=dense.bwd_input,
                         bwd_train=dense.bwd_input + 2.0 * dense.tokens * dense.matmul_params,
                         act_saved=dense.act_saved)

    def prepare(self, backbone, task):
        for p in backbone.model.parameters():
            p.requires_grad_(True)
        return backbone.model

    def save(self, model, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir))

    def load(self, backbone, task, adapter_dir: Path):
        state = read_adapter_weights(Path(adapter_dir), "model.safetensors")
        missing, unexpected = backbone.model.load_state_dict(state, strict=False)
        if unexpected:
            raise ModelError(f"{adapter_dir}: weights do not fit this backbone (unexpected: {unexpected[:3]}).")
        return self.prepare(backbone, task)


@register_method
class BitFit(Method):
    """Train only bias terms (and a new task head).

    Llama-family blocks have no biases; BitFit's parameterisation treats them as zero biases, so
    edgeft adds zero-initialised biases to the blocks' linear layers and trains those.
    """

    name = "bitfit"
    default_lr = 1e-3
    priced_as = "lora"  # a handful of vectors per block: priced as LoRA at its defaults (rank 8, query/value)
    supports_blockwise = True

    def prepare(self, backbone, task):
        model = backbone.model
        for module in model.modules():
            if isinstance(module, nn.Linear) and module.bias is None and module is not getattr(model, "lm_head", None):
                module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype))
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(".bias") or _is_head(name))
        return model

    def save(self, model, out_dir: Path) -> None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        state = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(state, str(Path(out_dir) / "bitfit.safetensors"))

    def load(self, backbone, task, adapter_dir: Path):
        model = self.prepare(backbone, task)
        state = read_adapter_weights(Path(adapter_dir), "bitfit.safetensors")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise ModelError(f"{adapter_dir}: BitFit weights do not fit this backbone (unexpected: {unexpected[:3]}).")
        return model
