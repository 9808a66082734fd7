"""side_attention: whether the side layers' own attention is causal or sees every real position. A causal LM read
at one position (classification, a verbalizer) has no later token to leak, so there both are valid; language
modelling must stay causal."""

import json

import pytest
import torch

from edgeft.errors import ConfigError, ModelError
from edgeft.methods import get_method
from edgeft.methods.pac.side_network import SideAttention
from edgeft.models import load_backbone
from tiny_pac import eval_logits, prepare_pac


@pytest.mark.parametrize("causal", [True, False])
def test_an_earlier_position_sees_a_later_one_only_when_bidirectional(causal):
    torch.manual_seed(0)
    att = SideAttention(8, 2, causal=causal, dropout=0.0)
    torch.nn.init.normal_(att.out.weight)  # a trained, non-zero output projection
    x = torch.randn(1, 5, 8)
    later = x.clone()
    later[0, -1] = torch.randn(8)  # only the last position changes
    mask = torch.ones(1, 5)
    first, moved = att(x, mask)[0, 0], att(later, mask)[0, 0]
    assert torch.allclose(first, moved) == causal


def test_the_option_reaches_the_side_layers_and_the_logits(tiny_llama):
    logits = {}
    for attention in ("causal", "bidirectional"):
        t, bb, feat, method, model = prepare_pac(tiny_llama, side_attention=attention)
        layers = [model.side.attention] + [layer.attention for layer in model.side.more]
        assert all(a.causal == (attention == "causal") for a in layers)
        assert method.spec(model)["side_attention"] == attention
        torch.manual_seed(1)
        for a in layers:
            torch.nn.init.normal_(a.out.weight, std=0.5)
        torch.nn.init.normal_(model.side.up.weight, std=0.5)  # a trained, non-zero correction
        logits[attention] = eval_logits(model, feat, t.train[:4])
    # the verbalizer reads the last position, which sees everything either way; the second layer reads first-layer
    # states that saw the future only when bidirectional
    assert not torch.allclose(logits["causal"], logits["bidirectional"], atol=1e-4)


def test_auto_resolves_per_backbone_and_objective(tiny_llama, tiny_bert):
    assert get_method("pac", {}).options.side_attention == "auto"
    readout = prepare_pac(tiny_llama)[-1]  # a causal LM's verbalizer: PAC.causal_readout_side_attention
    assert readout.side.causal == (get_method("pac", {}).causal_readout_side_attention == "causal")
    assert prepare_pac(tiny_llama, task="shakespeare")[-1].side.causal  # language modelling
    assert not prepare_pac(tiny_bert, head="sequence_classification")[-1].side.causal


def test_language_modelling_refuses_bidirectional_side_attention(tiny_llama):
    with pytest.raises(ConfigError, match="side_attention=bidirectional: this task trains a language model"):
        prepare_pac(tiny_llama, task="shakespeare", side_attention="bidirectional")


def test_copied_blocks_attend_as_the_backbone_and_refuse_another_choice(tiny_llama):
    model = prepare_pac(tiny_llama, side_init="backbone")[-1]
    assert model.side.causal
    with pytest.raises(ConfigError, match="side_attention=bidirectional: side_init=backbone copies"):
        prepare_pac(tiny_llama, side_init="backbone", side_attention="bidirectional")


def test_side_attention_is_saved_and_an_adapter_from_before_the_option_loads_as_the_backbone_attends(tmp_path,
                                                                                                      tiny_llama):
    t, bb, feat, method, model = prepare_pac(tiny_llama, side_attention="bidirectional")
    method.save(model, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "pac.json").read_text())["side_attention"] == "bidirectional"
    assert not get_method("pac", {"cache_dtype": "fp32"}).load(load_backbone(str(tiny_llama)), t,
                                                               tmp_path / "a").side.causal
    with pytest.raises(ModelError, match="side_attention: saved 'bidirectional', now 'causal'"):
        get_method("pac", {"cache_dtype": "fp32", "side_attention": "causal"}).load(load_backbone(str(tiny_llama)), t,
                                                                                    tmp_path / "a")
    spec = json.loads((tmp_path / "a" / "pac.json").read_text())
    del spec["side_attention"]  # an adapter written before the option existed: its side layers were causal
    (tmp_path / "a" / "pac.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="side_attention: saved 'causal', now 'bidirectional'"):
        get_method("pac", {"cache_dtype": "fp32", "side_attention": "bidirectional"}).load(
            load_backbone(str(tiny_llama)), t, tmp_path / "a")
    assert get_method("pac", {"cache_dtype": "fp32"}).load(load_backbone(str(tiny_llama)), t,
                                                           tmp_path / "a").side.causal
