"""pair_encoding: how PAC reads a sentence pair on an encoder with a task head (docs/benchmarks_pac.md,
'pair_encoding'). joint: one sequence, mean-pooled; segments: the same encoding, the head reads the two segments'
normalised means as [|u-v|, u*v]; siamese: the frozen backbone also encodes each segment on its own, as a
bi-encoder (all-MiniLM-L6-v2) was trained. It applies only where the side layers are random (not copies)."""

import json

import pytest
import torch

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.methods import METHODS, get_method
from edgeft.methods.pac.cache import CacheKey
from edgeft.methods.pac.model import pair_features
from edgeft.models import load_backbone
from edgeft.train.loop import TrainConfig, Trainer
from edgeft.train.recipe import make_loss_fn


def _task(name):
    return load_task(TaskConfig(name=name, train_samples=12, dev_samples=4, max_length=24))


def _prepare(path, head, t, options=None):
    bb = load_backbone(str(path), head=head, num_labels=t.num_labels,
                       problem_type="regression" if t.kind == "regression" else None)
    method = get_method("pac", {"cache_dtype": "fp32", "width": 16, "norm_samples": 8, **(options or {})})
    torch.manual_seed(0)
    return bb, method, method.prepare(bb, t)


def test_the_default_resolves_per_family_and_task(tiny_bert, tiny_llama, monkeypatch):
    """auto: siamese for a pair with random side layers on an encoder (the rule's choice on MiniLM-L6's held-out
    rows), joint on a causal LM and where the side layers are copies (pair classification)."""
    assert get_method("pac", {}).options.pair_encoding == "auto"
    assert _prepare(tiny_bert, "sequence_classification", _task("stsb"))[2].pair_encoding == "siamese"
    assert _prepare(tiny_bert, "sequence_classification", _task("mrpc"))[2].pair_encoding == "joint"
    assert _prepare(tiny_bert, "sequence_classification", _task("sst2"))[2].pair_encoding == "joint"
    assert _prepare(tiny_llama, "sequence_classification", _task("stsb"))[2].pair_encoding == "joint"
    assert _prepare(tiny_bert, "sequence_classification", _task("stsb"), {"pair_encoding": "joint"})[2] \
        .pair_encoding == "joint"
    for strategy in ("hybrid", "split", "deft"):  # they run the backbone stage by stage and pool themselves
        bb = load_backbone(str(tiny_bert), head="sequence_classification", num_labels=1, problem_type="regression")
        method = get_method("pac", {"cache_dtype": "fp32", "width": 16})
        method.run_blockwise(strategy)
        assert method.prepare(bb, _task("stsb")).pair_encoding == "joint"
    monkeypatch.setattr(METHODS["pac"], "encoder_pair_encoding", "segments")  # auto follows the class default
    assert _prepare(tiny_bert, "sequence_classification", _task("stsb"))[2].pair_encoding == "segments"


def test_an_adapter_saved_before_the_option_reloads_joint_under_auto(tmp_path, tiny_bert):
    t = _task("stsb")
    bb, method, model = _prepare(tiny_bert, "sequence_classification", t, {"pair_encoding": "joint"})
    method.save(model, tmp_path / "a")
    spec = json.loads((tmp_path / "a" / "pac.json").read_text())
    del spec["pair_encoding"]  # as written before pair_encoding existed
    (tmp_path / "a" / "pac.json").write_text(json.dumps(spec))
    fresh = load_backbone(str(tiny_bert), head="sequence_classification", num_labels=1, problem_type="regression")
    assert get_method("pac", {"cache_dtype": "fp32", "width": 16}).load(fresh, t, tmp_path / "a").pair_encoding == "joint"


@pytest.mark.parametrize("mode", ["segments", "siamese"])
def test_it_applies_to_pairs_on_an_encoder_with_random_side_layers_only(tiny_bert, tiny_llama, mode):
    o = {"pair_encoding": mode}
    bb, method, model = _prepare(tiny_bert, "sequence_classification", _task("stsb"), o)
    assert model.pair_encoding == mode and model.positions == "all"
    assert model.task_head[-1].in_features == 2 * bb.arch.hidden_size
    assert method.spec(model)["pair_encoding"] == mode
    # pair classification under side_init=auto gets copied blocks, which attend across the joint sequence
    assert _prepare(tiny_bert, "sequence_classification", _task("mrpc"), o)[2].pair_encoding == "joint"
    assert _prepare(tiny_bert, "sequence_classification", _task("mrpc"), {**o, "side_init": "random"})[2] \
        .pair_encoding == mode
    assert _prepare(tiny_bert, "sequence_classification", _task("sst2"), o)[2].pair_encoding == "joint"
    assert _prepare(tiny_llama, "causal_lm", _task("rte"), {**o, "side_init": "random"})[2].pair_encoding == "joint"


def test_siamese_encodes_each_segment_on_its_own(tiny_bert):
    """Segment a's states are those of [CLS] a [SEP] alone, segment b's those of [CLS] b [SEP] alone (without its
    [CLS]); in a padded batch of pairs of other lengths too."""
    t = _task("stsb")
    bb, method, model = _prepare(tiny_bert, "sequence_classification", t, {"pair_encoding": "siamese", "cache": "off"})
    tok = bb.tokenizer
    pairs = [("the cat sat on the mat", "a dog ran"), ("a dog", "the cat sat on the mat today")]
    enc = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
    got = model.tapped(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    for row, (a, b) in enumerate(pairs):
        types, mask = enc["token_type_ids"][row], enc["attention_mask"][row].bool()
        for text, where, skip in ((a, mask & ~types.bool(), 0), (b, mask & types.bool(), 1)):
            alone = tok(text, return_tensors="pt")
            want = model.run_backbone(alone["input_ids"], alone["attention_mask"], alone["token_type_ids"], "all")
            assert torch.allclose(got[row, where], want[0, skip:], atol=1e-5), (row, text)
    # the joint encoding mixes the segments (the test can fail)
    joint = _prepare(tiny_bert, "sequence_classification", t, {"cache": "off", "pair_encoding": "joint"})[2]
    mixed = joint.tapped(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    b_pos = enc["attention_mask"][0].bool() & enc["token_type_ids"][0].bool()
    assert not torch.allclose(mixed[0, b_pos], got[0, b_pos], atol=1e-3)


def test_pair_features_are_the_cosine_pieces():
    h = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    types = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    f = pair_features(h, mask, types)
    u = h[0, :2].mean(0)
    v = h[0, 2:4].mean(0)
    assert torch.allclose(f[0, 8:].sum() / 8, torch.cosine_similarity(u, v, dim=0), atol=1e-5)
    assert torch.allclose(f[0, :8], (u / u.norm() - v / v.norm()).abs() * 8 ** 0.5, atol=1e-5)
    assert f.shape == (2, 16)


def test_the_cache_key_changes_only_for_siamese():
    base = dict(backbone="b", tokenizer="t", weights="w", taps=(1, 3), max_length=24, positions="all", hidden=8,
                dtype="fp32")
    joint = CacheKey(**base)
    assert "encoding" not in joint.fields()  # caches made before the field existed keep their keys
    assert CacheKey(**base, encoding="siamese").fingerprint != joint.fingerprint


@pytest.mark.parametrize("mode", ["segments", "siamese"])
def test_trains_evaluates_saves_and_reloads(tmp_path, tiny_bert, mode):
    t = _task("stsb")
    bb, method, model = _prepare(tiny_bert, "sequence_classification", t, {"pair_encoding": mode})
    feat = Featurizer(t, bb.tokenizer, objective_for(t, bb.head), 24)
    Trainer(model, method, feat, feat.encode(t.train), TrainConfig(epochs=2, batch_size=4, device="cpu"),
            make_loss_fn(feat)).fit()
    method.save(model, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "pac.json").read_text())["pair_encoding"] == mode
    batch = feat.collate(feat.encode(t.dev))
    model.eval()
    with torch.no_grad():
        want = model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch["token_type_ids"]).logits
    assert torch.isfinite(want).all()
    with torch.no_grad():  # no token types (bench/pac_vs_baselines.py's warm-up call): one segment, as BERT reads it
        assert torch.isfinite(model(batch["input_ids"], batch["attention_mask"]).logits).all()
    fresh = load_backbone(str(tiny_bert), head="sequence_classification", num_labels=t.num_labels,
                          problem_type="regression")
    loaded = method.load(fresh, t, tmp_path / "a").eval()
    with torch.no_grad():
        got = loaded(batch["input_ids"], batch["attention_mask"], token_type_ids=batch["token_type_ids"]).logits
    assert torch.allclose(want, got, atol=1e-5)
