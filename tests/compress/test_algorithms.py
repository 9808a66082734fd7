"""GPTQ, SparseGPT, magnitude pruning and the packing format on single matrices (no model needed)."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from edgeft.compress.gptq import gptq_quantize
from edgeft.compress.prune import magnitude_mask
from edgeft.compress.qlinear import QuantLinear
from edgeft.compress.quantizer import QuantGrid, dequantize_codes, pack, rtn_quantize, unpack
from edgeft.compress.sparsegpt import sparsegpt_prune


def correlated_inputs(n=2048, cols=96, seed=0):
    """Inputs with strongly correlated features, like a transformer's activations (where GPTQ helps)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(cols, cols, generator=g)
    scales = torch.logspace(0, -2, cols)
    return torch.randn(n, cols, generator=g) @ (basis * scales[:, None])


def layer_error(W, Q, X):
    return float(((X @ W.T - X @ Q.T) ** 2).sum())


def hessian(X):
    return 2 * X.T @ X / X.shape[0]


@pytest.mark.parametrize("bits,group_size,act_order,sym", [(4, 32, False, False), (4, -1, False, True),
                                                           (4, 32, True, False), (8, 64, False, False),
                                                           (2, 32, False, False)])
def test_gptq_beats_round_to_nearest_and_matches_its_packed_codes(bits, group_size, act_order, sym):
    torch.manual_seed(0)
    W = torch.randn(64, 96)
    X = correlated_inputs()
    grid = QuantGrid(bits, sym)
    res = gptq_quantize(W, hessian(X), grid, group_size=group_size, blocksize=32, act_order=act_order)
    codes, s, z = rtn_quantize(W, grid, group_size)
    rtn = dequantize_codes(codes, s, z, group_size)
    assert layer_error(W, res.weight, X) < 0.9 * layer_error(W, rtn, X)
    assert res.codes.min() >= 0 and res.codes.max() <= grid.maxq
    # the weight GPTQ used is exactly what the stored integers + float16 scales give back
    assert torch.equal(dequantize_codes(res.codes, res.scales, res.zeros, group_size), res.weight)
    assert torch.equal(res.scales, res.scales.half().float())


def test_gptq_with_uncorrelated_inputs_is_round_to_nearest():
    """With H = I there is nothing to compensate: every error update is zero, so GPTQ == RTN exactly."""
    W = torch.randn(16, 64)
    grid = QuantGrid(4, False)
    res = gptq_quantize(W, torch.eye(64), grid, group_size=16, blocksize=32)
    codes, _, _ = rtn_quantize(W, grid, 16)
    assert torch.equal(res.codes, codes)


def test_gptq_does_not_modify_its_input():
    W = torch.randn(8, 32)
    before = W.clone()
    H = hessian(correlated_inputs(256, 32))
    H[3, :] = 0
    H[:, 3] = 0  # a dead input column: the reference zeroes it in the *copy*
    gptq_quantize(W, H, QuantGrid(4), group_size=16)
    assert torch.equal(W, before)


def test_sparsegpt_hits_the_sparsity_and_beats_magnitude():
    torch.manual_seed(1)
    W = torch.randn(64, 128)
    X = correlated_inputs(2048, 128, seed=1)
    res = sparsegpt_prune(W, hessian(X), sparsity=0.5, blocksize=32)
    assert abs(float((res.weight == 0).float().mean()) - 0.5) < 0.01
    assert torch.equal(res.weight == 0, res.mask)
    mag = W * ~magnitude_mask(W, 0.5)
    assert layer_error(W, res.weight, X) < 0.7 * layer_error(W, mag, X)


def test_sparsegpt_two_four_pattern_is_exact():
    torch.manual_seed(2)
    W = torch.randn(32, 64)
    X = correlated_inputs(1024, 64, seed=2)
    res = sparsegpt_prune(W, hessian(X), prune_n=2, prune_m=4, blocksize=32)
    zeros_per_group = (res.weight.view(32, 16, 4) == 0).sum(-1)
    assert bool((zeros_per_group >= 2).all())
    mag = W * ~magnitude_mask(W, 0.0, prune_n=2, prune_m=4)
    assert bool(((mag.view(32, 16, 4) == 0).sum(-1) == 2).all())
    assert layer_error(W, res.weight, X) < layer_error(W, mag, X)


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([2, 4, 8]), rows=st.integers(1, 5), cols=st.integers(1, 37), seed=st.integers(0, 99))
def test_pack_unpack_roundtrip(bits, rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2 ** bits, (rows, cols), generator=g, dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.shape == (rows, -(-cols * bits // 8))
    assert torch.equal(unpack(packed, bits, cols), codes)


def test_quantlinear_forward_and_int4_kernel_agree():
    torch.manual_seed(3)
    lin = torch.nn.Linear(128, 48, bias=True)
    X = correlated_inputs(512, 128)
    res = gptq_quantize(lin.weight, hessian(X), QuantGrid(4), group_size=32)
    q = QuantLinear.from_codes(lin, res.codes, res.scales, res.zeros, 4, 32)
    x = torch.randn(3, 7, 128)
    ref = torch.nn.functional.linear(x, res.weight, lin.bias)
    assert torch.allclose(q(x), ref, atol=1e-5)
    assert q.qweight.dtype == torch.uint8 and q.qweight.numel() == 48 * 64  # two codes per byte
    if q.use_int4_kernel():
        assert torch.allclose(q(x), ref, atol=1e-3, rtol=1e-3)


def test_layers_fed_the_same_input_share_one_hessian(tiny_word_llama):
    """q/k/v read the attention norm's output and gate/up the MLP norm's: one Hessian each, not per layer."""
    from edgeft.compress.calibration import calibration_batches
    from edgeft.compress.hessian import HessianAccumulator
    from edgeft.compress.layerwise import _record_hessians
    from edgeft.models import load_backbone

    bb = load_backbone(str(tiny_word_llama))
    view = bb.view
    batches = calibration_batches("wikitext2", bb.tokenizer, "causal_lm", 4, 32, batch_size=2)
    hidden = [view.embed(b["input_ids"]) for b in batches]
    layers = {n: m for n, m in view.blocks[1].named_modules() if isinstance(m, torch.nn.Linear)}
    accs = _record_hessians(view, 1, layers, hidden, batches, "cpu")
    assert accs["self_attn.q_proj"] is accs["self_attn.k_proj"] is accs["self_attn.v_proj"]
    assert accs["mlp.gate_proj"] is accs["mlp.up_proj"]
    distinct = {id(a) for a in accs.values()}
    assert len(distinct) == 4  # qkv, o, gate/up, down
    # and each shared matrix is the one computed from that layer's own inputs
    ref = HessianAccumulator(64)
    hook = layers["mlp.up_proj"].register_forward_pre_hook(lambda m, i: ref.add(i[0]))
    with torch.no_grad():
        for h, b in zip(hidden, batches):
            view.run_blocks(h, 1, 2, b["attention_mask"])
    hook.remove()
    assert torch.allclose(ref.hessian(), accs["mlp.up_proj"].hessian(), rtol=1e-5, atol=1e-6)


def test_mse_range_search_never_does_worse_than_min_max():
    torch.manual_seed(4)
    W = torch.randn(32, 64)
    W[:, 5] *= 8  # an outlier column: the full range wastes levels on it
    plain, searched = QuantGrid(4), QuantGrid(4, mse=True)
    s0, z0 = plain.params(W)
    s1, z1 = searched.params(W)
    e0 = (plain.fake_quantize(W, s0[:, None], z0[:, None]) - W).abs().pow(2.4).sum(1)
    e1 = (searched.fake_quantize(W, s1[:, None], z1[:, None]) - W).abs().pow(2.4).sum(1)
    assert bool((e1 <= e0 + 1e-6).all()) and float(e1.sum()) < float(e0.sum())
    assert torch.equal(s1, s1.half().float())  # still float16-exact scales


def test_mse_search_equals_the_reference_loop():
    """The vectorised search picks what the reference Quantizer's loop (grid 100, shrink 0.8, norm 2.4) picks."""
    torch.manual_seed(5)
    W = torch.randn(16, 40)
    W[:, 2] *= 6
    g = QuantGrid(4, mse=True)
    zeros = torch.zeros(16)
    xmin, xmax = torch.minimum(W.min(1).values, zeros), torch.maximum(W.max(1).values, zeros)
    scale, zero = g._from_range(xmin, xmax)
    best = torch.full_like(scale, float("inf"))
    for i in range(80):
        p = 1 - i / 100
        s1, z1 = g._from_range(p * xmin, p * xmax)
        err = (g.fake_quantize(W, s1[:, None], z1[:, None]) - W).abs().pow(2.4).sum(1)
        better = err < best
        best, scale, zero = torch.where(better, err, best), torch.where(better, s1, scale), torch.where(better, z1, zero)
    s, z = g.params(W)
    assert torch.equal(s, scale) and torch.equal(z, zero)
