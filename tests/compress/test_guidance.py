"""End-loss guidance: per-token weights from output gradients, and the weighted layer Hessian."""

import pytest
import torch

from edgeft.compress.hessian import HessianAccumulator


def test_a_weighted_token_counts_as_that_many_copies():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g)
    w = torch.tensor([[3.0, 1, 1, 1, 1], [1, 1, 2, 1, 1]])
    weighted = HessianAccumulator(8)
    weighted.add(x, weight=w)
    copies = HessianAccumulator(8)
    rows = x.reshape(-1, 8)
    repeats = w.reshape(-1).long()
    copies.add(rows.repeat_interleave(repeats, dim=0))
    assert torch.allclose(weighted.hessian(), copies.hessian(), rtol=1e-5, atol=1e-6)


def test_grouped_weights_give_one_hessian_per_group():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 5, 8, generator=g), torch.rand(2, 5, 3, generator=g)
    grouped = HessianAccumulator(8)
    grouped.add(x, weight=w)
    H = grouped.hessian()
    assert H.shape == (3, 8, 8)
    for k in range(3):
        one = HessianAccumulator(8)
        one.add(x, weight=w[..., k])
        assert torch.allclose(H[k], one.hessian(), rtol=1e-5, atol=1e-6)


def test_gptq_by_row_groups_quantises_each_group_with_its_own_hessian():
    from edgeft.compress.gptq import gptq_by_row_groups, gptq_quantize
    from edgeft.compress.quantizer import QuantGrid

    g = torch.Generator().manual_seed(2)
    W = torch.randn(12, 16, generator=g)
    Hs = torch.stack([(lambda X: X.T @ X / 64)(torch.randn(64, 16, generator=g)) for _ in range(3)])
    res = gptq_by_row_groups(W, Hs, QuantGrid(4), 8, act_order=True)
    for k, rows in enumerate(torch.arange(12).tensor_split(3)):
        part = gptq_quantize(W[rows], Hs[k], QuantGrid(4), 8, act_order=True)
        assert torch.equal(res.codes[rows], part.codes) and torch.equal(res.weight[rows], part.weight)
    other = gptq_quantize(W, Hs[0], QuantGrid(4), 8, act_order=True)
    assert not torch.equal(res.codes, other.codes)  # the groups' Hessians did matter


@pytest.mark.parametrize("rows,act_order", [(192, True), (192, False), (194, True)])
def test_row_groups_run_as_one_batch_and_give_each_group_what_it_gives_alone(rows, act_order):
    """Equal row groups run the column loop once for all of them (194 rows in 4 groups: one by one); at layer-like
    sizes the codes and weights must still be bit for bit those of each group quantised alone."""
    from edgeft.compress.gptq import gptq_by_row_groups, gptq_quantize
    from edgeft.compress.quantizer import QuantGrid

    g = torch.Generator().manual_seed(3)
    W = torch.randn(rows, 1536, generator=g) * 0.05
    Hs = torch.stack([(lambda X: X.T @ X / 512)(torch.randn(512, 1536, generator=g) * torch.rand(1536, generator=g) * 3)
                      for _ in range(4)])
    res = gptq_by_row_groups(W, Hs, QuantGrid(4), 128, act_order=act_order)
    for k, part_rows in enumerate(torch.arange(rows).tensor_split(4)):
        part = gptq_quantize(W[part_rows], Hs[k], QuantGrid(4), 128, act_order=act_order)
        for field in ("codes", "scales", "zeros", "weight"):
            assert torch.equal(getattr(res, field)[part_rows], getattr(part, field)), (k, field)


def _guided_setup(tiny_word_llama, channel_groups=1):
    from edgeft.compress.calibration import calibration_batches
    from edgeft.compress.guidance import output_gradient_weights
    from edgeft.models import load_backbone

    bb = load_backbone(str(tiny_word_llama))
    batches = calibration_batches("wikitext2", bb.tokenizer, "causal_lm", 4, 32, batch_size=2)
    batches[1]["attention_mask"][0, -5:] = 0  # a padded row: its padding must get no weight
    return bb, batches, output_gradient_weights(bb, batches, channel_groups=channel_groups)


@pytest.mark.parametrize("groups", [1, 2])
def test_output_gradient_weights_match_autograd_and_skip_padding(tiny_word_llama, groups):
    bb, batches, weights = _guided_setup(tiny_word_llama, groups)
    name = "model.layers.1.mlp.down_proj"
    assert all(p.grad is None for p in bb.model.parameters())  # no weight gradients were built
    assert set(weights) == {f"model.layers.{i}.{n}" for i in range(3) for n in
                            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    # recompute one layer's output gradient directly
    b = batches[1]
    out = {}
    layer = bb.model.get_submodule(name)

    def keep(module, inputs, output):
        output.retain_grad()
        out["y"] = output

    h = layer.register_forward_hook(keep)
    embeds = bb.model.get_input_embeddings()(b["input_ids"]).detach().requires_grad_(True)
    labels = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
    bb.model(inputs_embeds=embeds, attention_mask=b["attention_mask"], labels=labels).loss.backward()
    h.remove()
    real = b["attention_mask"].bool()
    got = weights[name][1] if groups > 1 else weights[name][1][..., None]
    assert got.shape == (*real.shape, groups)
    for k, part in enumerate(out["y"].grad.tensor_split(groups, dim=-1)):
        g = part.pow(2).sum(-1)
        expected = torch.where(real, g / g[real].mean(), torch.zeros_like(g))
        assert torch.allclose(got[..., k], expected, rtol=1e-4, atol=1e-6)
        assert float(got[..., k][real].mean()) == pytest.approx(1.0, rel=1e-5)
    assert float(got[0, -5:].abs().sum()) == 0.0


def test_guided_hessians_are_per_layer_and_weighted(tiny_word_llama):
    from edgeft.compress.layerwise import _record_hessians

    bb, batches, weights = _guided_setup(tiny_word_llama)
    view = bb.view
    hidden = [view.embed(b["input_ids"]) for b in batches]
    layers = {n: m for n, m in view.blocks[1].named_modules() if isinstance(m, torch.nn.Linear)}
    accs = _record_hessians(view, 1, layers, hidden, batches, "cpu",
                            lambda n, k: weights[f"model.layers.1.{n}"][k])
    assert accs["self_attn.q_proj"] is not accs["self_attn.k_proj"]
    ref = HessianAccumulator(64)
    k_of = iter(range(len(batches)))
    hook = layers["self_attn.k_proj"].register_forward_pre_hook(
        lambda m, i: ref.add(i[0], state_mask[0], weights["model.layers.1.self_attn.k_proj"][next(k_of)]))
    with torch.no_grad():
        for h, b in zip(hidden, batches):
            state_mask = [b["attention_mask"].bool()]
            view.run_blocks(h, 1, 2, b["attention_mask"])
    hook.remove()
    assert torch.allclose(ref.hessian(), accs["self_attn.k_proj"].hessian(), rtol=1e-5, atol=1e-6)
    plain = _record_hessians(view, 1, layers, hidden, batches, "cpu")
    assert not torch.allclose(plain["self_attn.k_proj"].hessian(), accs["self_attn.k_proj"].hessian(), rtol=1e-2)


def test_guided_gptq_needs_a_language_model_head(tiny_word_llama):
    from edgeft.compress.guidance import output_gradient_weights
    from edgeft.errors import ConfigError
    from edgeft.models import load_backbone

    bb = load_backbone(str(tiny_word_llama), head="sequence_classification")
    with pytest.raises(ConfigError, match="guided=false"):
        output_gradient_weights(bb, [])
