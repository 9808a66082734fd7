"""GPTQ for a tied token embedding, the matrix llama.cpp also uses as the output layer.

Why: a file at about 4.5 bits per weight must quantise the embedding too (SmolLM2-135M: 28M of its
135M weights), and as the output layer it decides every logit. Its GPTQ Hessian is that of the output
layer's inputs (the final normed hidden states) over the calibration tokens, so the rounding error is
pushed where it changes the logits least. The float weight becomes exactly the dequantised codes (the
input lookup sees the same matrix), and the codes stay on the embedding module as buffers in
QuantLinear's layout (qweight, scales, qzeros), so GGUF export writes them as ggml blocks as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeft.compress.calibration import to_device
from edgeft.compress.gptq import gptq_quantize
from edgeft.compress.hessian import HessianAccumulator
from edgeft.compress.qlinear import QuantLinear
from edgeft.compress.quantizer import QuantGrid, group_count, pack

CODE_BUFFERS = ("qweight", "scales", "qzeros")


def tied_embedding(model: nn.Module) -> nn.Embedding | None:
    """The input embedding when the output layer shares its weight (else None)."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if emb is None or head is None or head.weight is not emb.weight:
        return None
    return emb


@torch.no_grad()
def output_hessian(model: nn.Module, batches: list[dict]) -> torch.Tensor:
    """H = 2 X Xᵀ / n of the output layer's inputs over the calibration tokens (padding left out).

    The inputs are the base model's last hidden states (final norm applied), so no logits are computed."""
    acc = HessianAccumulator(model.get_output_embeddings().in_features)
    device = model.get_output_embeddings().weight.device
    for batch in batches:
        batch = to_device(batch, device)
        mask = batch.get("attention_mask")
        hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        acc.add(hidden, mask.bool() if mask is not None else None)
    return acc.hessian()


def quantize_tied_embedding(model: nn.Module, batches: list[dict], grid: QuantGrid, group_size: int,
                            percdamp: float = 0.01, act_order: bool = True) -> dict:
    """GPTQ the tied embedding in place; returns the GPTQ loss."""
    emb = tied_embedding(model)
    if emb is None:
        raise ValueError("the output layer does not share the input embedding's weight")
    res = gptq_quantize(emb.weight.detach(), output_hessian(model, batches), grid, group_size, percdamp=percdamp,
                        act_order=act_order)
    emb.weight.data.copy_(res.weight.to(emb.weight.dtype))
    add_code_buffers(emb, grid.bits, group_size)
    emb.qweight.copy_(pack(res.codes, grid.bits))
    emb.scales.copy_(res.scales.half())
    emb.qzeros.copy_(res.zeros.to(torch.uint8))
    return {"loss": res.loss}


def add_code_buffers(emb: nn.Embedding, bits: int, group_size: int) -> None:
    """Empty code buffers (the loader fills them from the stored folder)."""
    rows, cols = emb.weight.shape
    groups = group_count(cols, group_size)
    emb.register_buffer("qweight", torch.zeros(rows, -(-cols * bits // 8), dtype=torch.uint8))
    emb.register_buffer("scales", torch.zeros(rows, groups, dtype=torch.float16))
    emb.register_buffer("qzeros", torch.zeros(rows, groups, dtype=torch.uint8))


def embedding_codes(emb: nn.Module, bits: int, group_size: int) -> QuantLinear | None:
    """The embedding's stored codes as a QuantLinear (rows = vocabulary), or None if it has none."""
    if not all(hasattr(emb, b) for b in CODE_BUFFERS):
        return None
    rows, cols = emb.weight.shape
    q = QuantLinear(cols, rows, bits, group_size)
    for b in CODE_BUFFERS:
        getattr(q, b).copy_(getattr(emb, b))
    return q


def drop_code_buffers(emb: nn.Module) -> None:
    """Remove the codes (a plain Hugging Face folder holds the float weight only)."""
    for b in CODE_BUFFERS:
        emb._buffers.pop(b, None)
