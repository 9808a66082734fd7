"""Walk a model block by block through its BlockView, giving each linear layer the Hessian of its inputs.

This is the "sequential" driver of the GPTQ/SparseGPT reference code (llama_sequential): calibration
hidden states enter block 0; the block's linear layers record their inputs, get compressed, and the
*compressed* block's outputs become the next block's inputs, so later layers correct for earlier
layers' errors. Only one block's activations for the calibration set live in memory at a time.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from edgeft.compress.calibration import to_device
from edgeft.compress.hessian import HessianAccumulator

# Order in which a block's linear layers see compressed inputs ("true sequential" in GPTQ's code).
SEQUENTIAL_GROUPS = {
    "llama": [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
              ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]],
    "bert": [["attention.self.query", "attention.self.key", "attention.self.value"], ["attention.output.dense"],
             ["intermediate.dense"], ["output.dense"]],
}

# block_hook(view, block index, the block's inputs, batches, the float block's outputs) is called before a block
# is compressed and returns a function called once its layers are (norm tweaking records float outputs, then
# adjusts the block's norms); that function may return the block's outputs, which then feed the next block.
BlockHook = Callable[..., Callable[[], Optional[list[torch.Tensor]]]]

# fn(qualified name in the model, linear layer, Hessian) compresses the layer and returns its stats; it may
# replace the layer in the model (e.g. by a QuantLinear) as long as the replacement computes the same thing.
LayerFn = Callable[[str, nn.Linear, torch.Tensor], dict]


def block_linears(block: nn.Module, include_packed: bool = False) -> dict[str, nn.Module]:
    """The block's linear layers by name (packed QuantLinear layers too when asked)."""
    from edgeft.compress.qlinear import QuantLinear

    kinds = (nn.Linear, QuantLinear) if include_packed else (nn.Linear,)
    return {name: m for name, m in block.named_modules() if isinstance(m, kinds)}


def linear_groups(block: nn.Module, family: str, true_sequential: bool) -> list[list[str]]:
    names = list(block_linears(block))
    if not true_sequential:
        return [names]
    groups = [[n for n in g if n in names] for g in SEQUENTIAL_GROUPS.get(family, [])]
    groups = [g for g in groups if g]
    rest = [n for n in names if not any(n in g for g in groups)]
    return groups + ([rest] if rest else [])


def blocks_prefix(model: nn.Module, view) -> str:
    """Qualified name of the block list inside the model (e.g. 'model.layers')."""
    for name, module in model.named_modules():
        if module is view.blocks:
            return name
    raise ValueError("the BlockView's blocks are not part of this model")


def block_linear_names(model: nn.Module, view, blocks: range | None = None) -> list[str]:
    """Qualified names of the linear layers inside the blocks: what compression touches (not embeddings/head)."""
    prefix = blocks_prefix(model, view)
    blocks = blocks if blocks is not None else range(view.num_blocks)
    return [f"{prefix}.{i}.{n}" for i in blocks for n in block_linears(view.blocks[i], include_packed=True)]


def _record_hessians(view, i: int, layers: dict[str, nn.Module], hidden, batches, device,
                     weights: Callable[[str, int], torch.Tensor] | None = None,
                     outputs: list[torch.Tensor] | None = None) -> dict:
    """Run block i on every calibration batch and accumulate each layer's input Hessian (the block's outputs
    are appended to `outputs` when given, so a caller that needs them does not run the block again).

    Layers fed the very same tensor (q/k/v after the attention norm, gate/up after the MLP norm)
    share one accumulator, so that matrix is computed once rather than once per layer. With per-layer
    token weights (weights(layer, batch index)) every layer has its own matrix.
    """
    accs: dict[str, HessianAccumulator] = {}
    alias: dict[str, str] = {}  # layer -> layer whose accumulator it shares (fixed on the first batch)
    state: dict = {"first": True}

    def hook_for(name):
        def hook(module, inputs):
            x = inputs[0]
            if state["first"] and weights is None:
                key = (x.data_ptr(), tuple(x.shape), x.stride())
                if key in state["seen"]:
                    alias[name] = state["seen"][key][0]
                    return
                # keep x referenced until the pass ends, so no later tensor can reuse its memory address
                state["seen"][key] = (name, x)
            if name in alias:
                return
            if name not in accs:
                accs[name] = HessianAccumulator(module.in_features, device)
            accs[name].add(x, state["mask"], None if weights is None else weights(name, state["k"]))
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in layers.items()]
    try:
        for k, (h, b) in enumerate(zip(hidden, batches)):
            state.update(mask=b["attention_mask"].bool(), seen={}, k=k)
            out = view.run_blocks(h, i, i + 1, b["attention_mask"])
            if outputs is not None:
                outputs.append(out)
            state["first"] = False
    finally:
        for handle in handles:
            handle.remove()
    return {n: accs[alias.get(n, n)] for n in layers}


@torch.no_grad()
def compress_layerwise(backbone, batches: list[dict], fn: LayerFn, true_sequential: bool = False,
                       device: str | torch.device = "cpu", progress: Callable[[], None] | None = None,
                       blocks: range | None = None, token_weights: dict[str, list[torch.Tensor]] | None = None,
                       block_hook: BlockHook | None = None) -> dict[str, dict]:
    """Run `fn` on every linear layer of every block (or of `blocks`), in order; returns stats by name.

    token_weights: per layer (qualified name) and batch, a (batch, seq) weight for each token's share of
    the Hessian (edgeft.compress.guidance); None counts every real token once.
    block_hook: see BlockHook (edgeft.compress.norm_tweak.NormTweak); its work runs before the block's
    outputs become the next block's inputs, and the outputs it returns are those inputs.
    """
    view = backbone.view
    model = backbone.model
    was_training = model.training
    model.eval()
    batches = [to_device(b, device) for b in batches]
    hidden = [view.embed(b["input_ids"], b["attention_mask"], b.get("token_type_ids")) for b in batches]
    blocks = blocks if blocks is not None else range(view.num_blocks)
    prefix = blocks_prefix(model, view)
    stats: dict[str, dict] = {}
    try:
        for i in range(view.num_blocks):
            if i not in blocks:
                hidden = [view.run_blocks(h, i, i + 1, b["attention_mask"]) for h, b in zip(hidden, batches)]
                continue
            block = view.blocks[i]
            linears = block_linears(block)
            groups = linear_groups(block, view.family, true_sequential)
            after = block_hook(view, i, hidden, batches) if block_hook and not groups else None
            for g, group in enumerate(groups):
                weights = None if token_weights is None else \
                    (lambda n, k, i=i: token_weights[f"{prefix}.{i}.{n}"][k].to(device))
                float_out = [] if block_hook and g == 0 else None  # nothing is compressed before the first group
                accs = _record_hessians(view, i, {n: linears[n] for n in group}, hidden, batches, device, weights,
                                        float_out)
                if float_out is not None:
                    after = block_hook(view, i, hidden, batches, float_out)
                for n in group:
                    name = f"{prefix}.{i}.{n}"
                    stats[name] = fn(name, linears[n], accs[n].hessian())
            out = after() if after else None
            hidden = out if out is not None else \
                [view.run_blocks(h, i, i + 1, b["attention_mask"]) for h, b in zip(hidden, batches)]
            if progress:
                progress()
    finally:
        model.train(was_training)
    return stats
