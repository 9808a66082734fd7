"""End-loss guidance for layer-wise quantisation: how much each calibration token matters to each layer.

GPTQ's layer objective Σ_t ||(W - Ŵ) x_t||² counts every token alike. The model's loss does not: an
error at the attention-sink token (SmolLM2's first token carries ~24,000 in one residual channel from
block 12 on, and every later token attends to it) reaches the whole sequence, while an error on a
token the loss barely depends on costs little. GuidedQuant (Kim et al., ICML 2025) weights each
token's contribution to a layer's Hessian by the squared gradient of the end loss at that layer's
output; this module computes that weight per token and per group of output channels,
g_t,k = Σ_{c in group k} (∂L/∂y_t,c)², normalised to mean 1 per layer, group and batch, with one
backward pass of the un-compressed model over the calibration batches. Each group of output rows then
gets its own Hessian. No quantisation library offers it for our layer-wise driver, so it is written here.
"""

from __future__ import annotations

import torch

from edgeft.compress.calibration import to_device
from edgeft.compress.layerwise import block_linears, blocks_prefix
from edgeft.errors import ConfigError

# layer name -> one weight tensor per calibration batch: (batch, seq), or (batch, seq, groups) for groups > 1
TokenWeights = dict[str, list[torch.Tensor]]


def output_gradient_weights(backbone, batches: list[dict], device="cpu", channel_groups: int = 1) -> TokenWeights:
    """Per layer and calibration batch, each real token's squared output gradient (summed over each of
    `channel_groups` contiguous groups of output channels), divided by its mean over the batch's real tokens."""
    if backbone.head != "causal_lm":
        raise ConfigError(f"guided=true weights tokens by the language-modelling loss; this model's head is "
                          f"'{backbone.head}'. Use guided=false for it.")
    model, view = backbone.model, backbone.view
    prefix = blocks_prefix(model, view)
    layers = {f"{prefix}.{i}.{n}": m for i in range(view.num_blocks) for n, m in block_linears(view.blocks[i]).items()}
    found: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def record(name, grad):
        g2 = grad.detach().float().pow(2)
        parts = torch.tensor_split(g2, channel_groups, dim=-1)
        found[name].append(torch.stack([p.sum(-1) for p in parts], -1))

    def hook_for(name):
        # a hook on the output tensor gets the same gradient as a full module backward hook, without the
        # identity autograd nodes that one wraps around every layer's inputs and outputs (a fifth of the pass)
        def hook(module, inputs, output):
            output.register_hook(lambda grad: record(name, grad))
        return hook

    was_training = model.training
    model.eval()
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)  # gradients flow through activations only; no weight gradients are kept
    handles = [m.register_forward_hook(hook_for(n)) for n, m in layers.items()]
    try:
        for batch in batches:
            b = to_device(batch, device)
            mask = b["attention_mask"]
            embeds = model.get_input_embeddings()(b["input_ids"]).detach().requires_grad_(True)
            labels = b["input_ids"].masked_fill(mask == 0, -100)
            model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss.backward()
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    out: TokenWeights = {}
    for name, per_batch in found.items():
        weights = []
        for g, batch in zip(per_batch, batches):
            real = batch["attention_mask"].to(g.device).bool()
            mean = g[real].mean(0).clamp_min(torch.finfo(torch.float32).tiny)  # (groups,)
            w = torch.where(real[..., None], g / mean, torch.zeros_like(g))
            weights.append(w[..., 0] if channel_groups == 1 else w)
        out[name] = weights
    return out
