"""side_init=auto (PAC's default): copies of the backbone's last blocks for sentence-pair classification, random
side layers for everything else (single sentences, regression, language modelling) and under the block-wise
strategies. A saved adapter records the resolved value and reloads it (docs/benchmarks_pac.md, 'side_init=auto')."""

import json

import pytest
import torch

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import ConfigError, ModelError
from edgeft.methods import get_method
from edgeft.methods.pac.method import side_params
from edgeft.models import load_backbone
from edgeft.train.loop import TrainConfig, Trainer
from edgeft.train.recipe import make_loss_fn


def _task(name, **extra):
    return load_task(TaskConfig(name=name, train_samples=12, dev_samples=4, max_length=24, **extra))


def _prepare(path, head, t, options=None, strategy=None):
    bb = load_backbone(str(path), head=head, num_labels=t.num_labels,
                       problem_type="regression" if t.kind == "regression" else None)
    method = get_method("pac", {"cache_dtype": "fp32", **(options or {})})
    if strategy:
        method.run_blockwise(strategy)
    torch.manual_seed(0)
    return bb, method, method.prepare(bb, t)


def _user_pair_files(tmp_path, pair=True):
    rows = [{"text": f"the cat sat {i}", "label": "yes" if i % 2 else "no"} for i in range(10)]
    if pair:
        rows = [{**r, "text2": f"a dog ran {i}"} for i, r in enumerate(rows)]
    for folder in ("train", "dev"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = dict(data_file=str(tmp_path / "train" / "pairs.jsonl"), dev_file=str(tmp_path / "dev" / "pairs.jsonl"))
    return _task(str(tmp_path / "train" / "pairs.jsonl"), **cfg, **({"text2_column": "text2"} if pair else {}))


def test_default_is_auto_and_explicit_values_stay():
    assert get_method("pac", {}).options.side_init == "auto"
    for value in ("random", "backbone"):
        assert get_method("pac", {"side_init": value}).options.side_init == value


def test_is_pair_follows_the_examples(tmp_path):
    assert _task("mrpc").is_pair and _task("rte").is_pair and _task("stsb").is_pair
    assert not _task("sst2").is_pair and not _task("cola").is_pair
    assert _user_pair_files(tmp_path / "p").is_pair
    assert not _user_pair_files(tmp_path / "s", pair=False).is_pair


@pytest.mark.parametrize("task, expected", [("mrpc", "backbone"), ("rte", "backbone"), ("sst2", "random"),
                                            ("cola", "random")])
def test_auto_copies_blocks_for_pair_classification_only(tiny_bert, task, expected):
    bb, method, model = _prepare(tiny_bert, "sequence_classification", _task(task))
    assert method.spec(model)["side_init"] == expected
    assert (model.side.copies is not None) == (expected == "backbone")
    assert model.side_init_why.startswith("auto: ")


def test_auto_is_random_for_regression_pairs_and_language_modelling(tiny_bert, tiny_llama):
    t = _task("stsb")
    assert t.is_pair and t.kind == "regression"
    bb, method, model = _prepare(tiny_bert, "sequence_classification", t)
    assert method.spec(model)["side_init"] == "random"
    bb, method, model = _prepare(tiny_llama, "causal_lm", _task("shakespeare"))
    assert method.spec(model)["side_init"] == "random"


def test_auto_treats_a_user_file_with_text2_as_a_pair_task(tmp_path, tiny_bert):
    bb, method, model = _prepare(tiny_bert, "sequence_classification", _user_pair_files(tmp_path / "p"))
    assert method.spec(model)["side_init"] == "backbone"
    bb, method, model = _prepare(tiny_bert, "sequence_classification", _user_pair_files(tmp_path / "s", pair=False))
    assert method.spec(model)["side_init"] == "random"


@pytest.mark.parametrize("task", ["mrpc", "rte"])
def test_auto_is_random_on_a_causal_lm_even_for_pair_classification(tiny_llama, task):
    bb, method, model = _prepare(tiny_llama, "causal_lm", _task(task))
    assert method.spec(model)["side_init"] == "random" and model.side.copies is None
    assert model.side_init_why == "auto: a sentence-pair classification task on a causal LM (PAC.causal_pair_side_init)"
    bb, method, model = _prepare(tiny_llama, "causal_lm", _task(task), {"side_init": "backbone"})
    assert model.side.copies is not None  # copies stay available when asked for


def test_auto_falls_back_to_random_only_where_backbone_cannot_apply(tiny_bert, capsys):
    t = _task("rte")
    # tiny_bert has 4 blocks: copying 4 needs a fifth to feed them
    bb, method, model = _prepare(tiny_bert, "sequence_classification", t, {"side_layers": 4})
    assert method.spec(model)["side_init"] == "random"
    assert "this backbone has 4 blocks, so side_layers must be at most 3" in model.side_init_why
    assert "side_init=auto -> random" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="side_init=backbone: copies the last side_layers=4 blocks"):
        _prepare(tiny_bert, "sequence_classification", t, {"side_layers": 4, "side_init": "backbone"})
    # the block-wise strategies (the hybrid pipeline) cannot feed copied blocks
    for strategy in ("hybrid", "split", "deft"):
        bb, method, model = _prepare(tiny_bert, "sequence_classification", t, strategy=strategy)
        assert method.spec(model)["side_init"] == "random" and strategy in model.side_init_why
    # where it can apply, nothing is printed
    capsys.readouterr()
    _prepare(tiny_bert, "sequence_classification", t)
    assert "side_init=auto" not in capsys.readouterr().err


def test_the_saved_spec_records_the_resolved_value_and_reloads(tmp_path, tiny_bert):
    t = _task("mrpc")
    bb, method, model = _prepare(tiny_bert, "sequence_classification", t)
    feat = Featurizer(t, bb.tokenizer, objective_for(t, bb.head), 24)
    Trainer(model, method, feat, feat.encode(t.train), TrainConfig(epochs=1, batch_size=4, device="cpu"),
            make_loss_fn(feat)).fit()
    method.save(model, tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "pac.json").read_text())
    assert saved["side_init"] == "backbone" and saved["side_init_option"] == "auto"
    batch = feat.collate(feat.encode(t.dev))
    model.eval()
    with torch.no_grad():
        want = model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids")).logits
    for options in ({}, {"side_init": "backbone"}):  # auto rebuilds the saved value; the explicit one matches it
        fresh = load_backbone(str(tiny_bert), head="sequence_classification", num_labels=t.num_labels)
        loaded = get_method("pac", {"cache_dtype": "fp32", **options}).load(fresh, t, tmp_path / "a").eval()
        with torch.no_grad():
            got = loaded(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids")).logits
        assert torch.allclose(want, got, atol=1e-5)
    fresh = load_backbone(str(tiny_bert), head="sequence_classification", num_labels=t.num_labels)
    with pytest.raises(ModelError, match="side_init: saved 'backbone', now 'random'"):
        get_method("pac", {"cache_dtype": "fp32", "side_init": "random"}).load(fresh, t, tmp_path / "a")


def test_an_adapter_saved_with_random_on_a_pair_task_reloads_under_auto(tmp_path, tiny_bert):
    """Adapters trained before auto existed (random side layers) load with today's default on the same task."""
    t = _task("rte")
    bb, method, model = _prepare(tiny_bert, "sequence_classification", t, {"side_init": "random"})
    method.save(model, tmp_path / "a")
    fresh = load_backbone(str(tiny_bert), head="sequence_classification", num_labels=t.num_labels)
    loaded = get_method("pac", {"cache_dtype": "fp32"}).load(fresh, t, tmp_path / "a")
    assert loaded.side.copies is None


def test_planner_prices_auto_as_random():
    """The planner prices only block-wise runs, where auto resolves to random."""
    from edgeft.models.arch import ModelArch

    arch = ModelArch(name="t", family="llama", hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2,
                     intermediate_size=128, vocab_size=100)
    auto = side_params(get_method("pac", {}).options, arch)
    assert auto == side_params(get_method("pac", {"side_init": "random"}).options, arch)
    assert auto != side_params(get_method("pac", {"side_init": "backbone"}).options, arch)
