"""head_norm=final: PAC's task head on a Llama reads the state through the backbone's frozen final RMSNorm, as
the backbone's own classifier does (the raw residual stream has outlier channels); none keeps the raw state."""

import pytest
import torch

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import ModelError
from edgeft.methods import get_method
from edgeft.models import load_backbone


def _model(path, task, **options):
    t = load_task(TaskConfig(name=task, train_samples=12, dev_samples=4, max_length=24))
    bb = load_backbone(str(path), head="sequence_classification", num_labels=t.num_labels,
                       problem_type="regression" if t.kind == "regression" else None)
    feat = Featurizer(t, bb.tokenizer, objective_for(t, bb.head), 24)
    torch.manual_seed(0)
    method = get_method("pac", {"cache_dtype": "fp32", "dropout": 0.0, **options})
    return t, bb, feat, method, method.prepare(bb, t)


@pytest.mark.parametrize("head_norm", ["none", "final"])
def test_the_task_head_reads_the_normed_or_the_raw_last_token_state(tiny_llama, head_norm):
    t, bb, feat, method, model = _model(tiny_llama, "stsb", head_norm=head_norm)
    batch = feat.collate(feat.encode(t.train[:5]))
    model.eval()
    with torch.no_grad():
        ours = model(batch["input_ids"], batch["attention_mask"], sample_ids=batch["ids"]).logits
        h = bb.view.run_blocks(bb.view.embed(batch["input_ids"]), 0, bb.view.num_blocks, batch["attention_mask"])
        last = h[torch.arange(h.shape[0]), batch["attention_mask"].sum(1) - 1]  # right padding: last real token
        if head_norm == "final":
            last = bb.view.core.norm(last)
        ref = model.task_head(last)  # the side network starts at zero: the head sees the backbone's state
    assert torch.allclose(ours, ref, atol=1e-4)
    assert not any(p.requires_grad for p in bb.view.core.norm.parameters())  # the norm stays frozen


def test_head_norm_is_saved_and_an_adapter_must_be_loaded_with_it(tmp_path, tiny_llama):
    t, bb, feat, method, model = _model(tiny_llama, "stsb", head_norm="final")
    method.save(model, tmp_path / "a")
    fresh = load_backbone(str(tiny_llama), head="sequence_classification", num_labels=1, problem_type="regression")
    assert method.load(fresh, t, tmp_path / "a").head_norm == "final"
    with pytest.raises(ModelError, match="head_norm"):
        get_method("pac", {"cache_dtype": "fp32", "head_norm": "none"}).load(fresh, t, tmp_path / "a")


def test_head_norm_changes_nothing_on_bert(tiny_bert):
    outs = []
    for head_norm in ("none", "final"):
        t, bb, feat, method, model = _model(tiny_bert, "sst2", head_norm=head_norm)
        batch = feat.collate(feat.encode(t.train[:4]))
        model.eval()
        with torch.no_grad():
            outs.append(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits)
    assert torch.equal(outs[0], outs[1])


def test_an_adapter_saved_before_head_norm_existed_loads_as_it_was_trained(tmp_path, tiny_llama):
    import json

    t, bb, feat, method, model = _model(tiny_llama, "stsb", head_norm="none")
    method.save(model, tmp_path / "old")
    spec = json.loads((tmp_path / "old" / "pac.json").read_text())
    del spec["head_norm"]  # what an adapter written before the option existed looks like
    (tmp_path / "old" / "pac.json").write_text(json.dumps(spec))
    fresh = load_backbone(str(tiny_llama), head="sequence_classification", num_labels=1, problem_type="regression")
    loaded = get_method("pac", {"cache_dtype": "fp32"}).load(fresh, t, tmp_path / "old")  # default: final
    assert get_method("pac", {}).options.head_norm == "final" and loaded.head_norm == "none"
