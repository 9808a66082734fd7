"""out_scale: how PAC's correction joins the backbone's final state. fixed adds it as it is; stream scales it by
that state's RMS at each position (a Llama block's output is the raw residual stream, RMS ~40 in SmolLM2)."""

import json

import pytest
import torch

from edgeft.errors import ConfigError, ModelError
from edgeft.methods import get_method
from edgeft.methods.pac.side_network import ParallelAdapters
from edgeft.models import load_backbone
from tiny_pac import eval_logits, prepare_pac


def test_stream_scales_the_correction_by_the_states_rms_at_each_position():
    state = torch.tensor([[[3.0, 4.0], [0.0, 10.0]]])  # RMS 3.5355 and 7.0711
    corr = torch.tensor([[[1.0, -1.0], [2.0, 0.5]]])
    fixed = ParallelAdapters(2, 1, 2, out_scale="fixed").join(state, corr)
    stream = ParallelAdapters(2, 1, 2, out_scale="stream").join(state, corr)
    assert torch.equal(fixed, state + corr)
    rms = torch.tensor([12.5, 50.0]).sqrt().view(1, 2, 1)
    assert torch.allclose(stream, state + corr * rms)
    assert not torch.allclose(stream, fixed)


def test_stream_stays_finite_in_half_precision_with_an_outlier_channel():
    state = torch.full((1, 1, 8), 2.0, dtype=torch.float16)
    state[..., 0] = 1000.0  # squared: 1e6, beyond fp16's 65504
    out = ParallelAdapters(8, 1, 8, out_scale="stream").join(state, torch.full_like(state, 0.01))
    assert torch.isfinite(out).all()
    assert torch.allclose(out.float(), state.float() + 0.01 * state.float().pow(2).mean().sqrt(), rtol=1e-3)


def test_the_option_reaches_the_side_network_and_the_logits(tiny_llama):
    logits = {}
    for scale in ("fixed", "stream"):
        t, bb, feat, method, model = prepare_pac(tiny_llama, out_scale=scale)
        assert model.side.out_scale == scale and method.spec(model)["out_scale"] == scale
        torch.manual_seed(1)
        torch.nn.init.normal_(model.side.up.weight, std=0.5)  # a trained, non-zero correction
        logits[scale] = eval_logits(model, feat, t.train[:4])
    assert not torch.allclose(logits["fixed"], logits["stream"], atol=1e-3)


def test_out_scale_is_saved_and_an_adapter_from_before_the_option_loads_as_fixed(tmp_path, tiny_llama):
    t, bb, feat, method, model = prepare_pac(tiny_llama, out_scale="stream")
    method.save(model, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "pac.json").read_text())["out_scale"] == "stream"
    assert method.load(load_backbone(str(tiny_llama)), t, tmp_path / "a").side.out_scale == "stream"
    with pytest.raises(ModelError, match="out_scale: saved 'stream', now 'fixed'"):
        get_method("pac", {"cache_dtype": "fp32", "out_scale": "fixed"}).load(load_backbone(str(tiny_llama)), t,
                                                                               tmp_path / "a")
    t, bb, feat, method, model = prepare_pac(tiny_llama, out_scale="fixed")
    method.save(model, tmp_path / "old")
    spec = json.loads((tmp_path / "old" / "pac.json").read_text())
    del spec["out_scale"]  # an adapter written before the option existed
    (tmp_path / "old" / "pac.json").write_text(json.dumps(spec))
    loaded = get_method("pac", {"cache_dtype": "fp32"}).load(load_backbone(str(tiny_llama)), t, tmp_path / "old")
    assert loaded.side.out_scale == "fixed"  # under the default (auto), as it was trained


def test_auto_is_stream_on_a_causal_lm_and_fixed_on_an_encoder(tiny_llama, tiny_bert):
    assert get_method("pac", {}).options.out_scale == "auto"
    assert prepare_pac(tiny_llama)[-1].side.out_scale == "stream"
    assert prepare_pac(tiny_bert, head="sequence_classification")[-1].side.out_scale == "fixed"


def test_an_unknown_out_scale_is_a_clear_error():
    with pytest.raises(ConfigError, match="out_scale: Input should be 'auto', 'fixed' or 'stream'"):
        get_method("pac", {"out_scale": "rms"})
