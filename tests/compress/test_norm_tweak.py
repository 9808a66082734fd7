"""Norm tweaking: only the norms move, and they move the quantised block's output towards the float one."""

import copy

import pytest
import torch

from edgeft.compress.norm_tweak import NormTweak, block_norm_weights, channel_distribution_loss


def test_channel_distribution_loss_compares_channel_means_and_deviations():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 6, 4, generator=g)
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[1, 4:] = False
    shift = torch.tensor([1.0, 0.0, -2.0, 0.0])
    # a per-channel shift changes only the means; a permutation of the tokens changes nothing
    assert float(channel_distribution_loss(f + shift, f, keep)) == pytest.approx(float(shift.pow(2).mean()), rel=1e-5)
    perm = f.clone()
    perm[0] = f[0].flip(0)
    assert float(channel_distribution_loss(perm, f, keep)) == pytest.approx(0.0, abs=1e-10)
    q = f.clone()
    q[1, 5] += 100.0  # a padding position is not counted
    assert float(channel_distribution_loss(q, f, keep)) == pytest.approx(0.0, abs=1e-10)
    sd = f[keep].std(0, correction=0)
    assert float(channel_distribution_loss(2 * f - f[keep].mean(0), f, keep)) == pytest.approx(float(sd.pow(2).mean()),
                                                                                            rel=1e-4)


@pytest.mark.parametrize("loss", ["dist", "mse"])
def test_tweaking_lowers_the_block_error_and_leaves_quantised_weights_alone(tiny_word_llama, loss):
    from edgeft.compress.calibration import calibration_batches
    from edgeft.compress.gptq import gptq_quantize
    from edgeft.compress.layerwise import compress_layerwise
    from edgeft.compress.norm_tweak import LOSSES
    from edgeft.compress.quantizer import QuantGrid
    from edgeft.models import load_backbone

    bb = load_backbone(str(tiny_word_llama))
    float_model = copy.deepcopy(bb.model)
    batches = calibration_batches("wikitext2", bb.tokenizer, "causal_lm", 8, 32, batch_size=4)
    batches[1]["attention_mask"][0, -6:] = 0
    quantised = {}

    def fn(name, lin, H):
        res = gptq_quantize(lin.weight, H, QuantGrid(2), 32, act_order=True)  # 2-bit: a large error to repair
        lin.weight.data.copy_(res.weight)
        quantised[name] = res.weight.clone()
        return {}

    norms_before = {n: p.detach().clone() for n, p in bb.model.named_parameters() if "norm" in n}
    tweak = NormTweak(lr=1e-2, epochs=4, loss=loss)
    compress_layerwise(bb, batches, fn, block_hook=tweak)

    # the quantised linear weights are exactly what GPTQ produced; the block norms (and only they) moved
    for name, w in quantised.items():
        assert torch.equal(bb.model.get_submodule(name).weight, w)
    assert set(tweak.stats) == {0, 1, 2}
    moved = {n for n, p in bb.model.named_parameters() if "norm" in n and not torch.equal(p, norms_before[n])}
    assert moved and all(n.startswith("model.layers.") for n in moved)  # the final norm is not a block's
    for i, s in tweak.stats.items():
        assert s["norms"] == 2 and s["kept"] and s["loss_after"] < 0.9 * s["loss_before"], (i, s)
    assert not any(p.grad is not None for p in bb.model.parameters())

    # block 0 sees the embeddings in both models: recompute its error directly, with and without the tweak
    view, fview = bb.view, copy.deepcopy(bb.view)
    fview.blocks = float_model.model.layers
    untweaked = copy.deepcopy(view.blocks[0])
    for n, p in block_norm_weights(untweaked).items():
        p.data.copy_(norms_before[f"model.layers.0.{n}.weight"])
    errors = {"tweaked": 0.0, "untweaked": 0.0}
    with torch.no_grad():
        for b in batches:
            h, mask = view.embed(b["input_ids"]), b["attention_mask"]
            target = fview.run_blocks(h, 0, 1, mask)
            errors["tweaked"] += float(LOSSES[loss](view.run_blocks(h, 0, 1, mask), target, mask.bool()))
            tweaked_block = view.blocks[0]
            view.blocks[0] = untweaked
            errors["untweaked"] += float(LOSSES[loss](view.run_blocks(h, 0, 1, mask), target, mask.bool()))
            view.blocks[0] = tweaked_block
    assert errors["tweaked"] < 0.9 * errors["untweaked"]


def test_a_tweak_that_does_not_help_is_undone(tiny_word_llama):
    from edgeft.compress.calibration import calibration_batches
    from edgeft.models import load_backbone

    bb = load_backbone(str(tiny_word_llama))
    batches = calibration_batches("wikitext2", bb.tokenizer, "causal_lm", 4, 32, batch_size=4)
    view = bb.view
    hidden = [view.embed(b["input_ids"]) for b in batches]
    before = {n: p.detach().clone() for n, p in block_norm_weights(view.blocks[0]).items()}
    tweak = NormTweak(lr=1.0, epochs=1, loss="mse")
    after = tweak(view, 0, hidden, batches)  # nothing is quantised: the block already matches its float output
    after()
    assert tweak.stats[0]["loss_before"] == pytest.approx(0.0, abs=1e-12) and not tweak.stats[0]["kept"]
    for n, p in block_norm_weights(view.blocks[0]).items():
        assert torch.equal(p, before[n])


def test_gptq_step_with_norm_tweak_records_it(tiny_word_llama, tmp_path):
    from edgeft.compress.pipeline import CompressConfig, run_compress

    cfg = CompressConfig(model=str(tiny_word_llama), method="gptq", out=str(tmp_path / "q"), dtype="float32",
                         options={"bits": 4, "group_size": 32, "norm_tweak": True, "norm_tweak_lr": 1e-3},
                         calib_task="wikitext2", calib_samples=4, calib_seq_len=32, eval_wikitext_windows=2,
                         eval_seq_len=32, eval_task="none", eval_before=False)
    rec = run_compress(cfg, log=lambda m: None)["records"][-1]
    assert "norm-tweaked" in rec["label"]
    assert set(rec["extra"]["norm_tweak"]) == {"0", "1", "2"}
