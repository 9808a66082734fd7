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
