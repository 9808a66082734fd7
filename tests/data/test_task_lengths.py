"""Each task's own row and answer lengths (data.tasks.default_lengths), taken alike by finetune, eval, launch and
federate: at the general 128 tokens a row and 64 generated, GSM8K's "#### N" line was cut from 95% of the training
rows and 91% of the dev answers, so a run at the defaults could not score one answer; and eval cut an adapter's
rows to its own 128, not to the length the adapter was trained and scored at."""

import json
from types import SimpleNamespace

import torch

from edgeft.data.features import Featurizer, long_answer_notes
from edgeft.data.tasks import TaskConfig, default_lengths, load_task
from edgeft.federated.config import FederatedConfig
from edgeft.methods.base import ADAPTER_NOTE
from edgeft.runtime.spec import RuntimeTrain
from edgeft.train.recipe import FinetuneConfig, eval_task_config


def test_bundled_tasks_take_their_own_lengths_unless_given():
    assert TaskConfig(name="gsm8k").max_length == 384 and TaskConfig(name="GSM8K").max_length == 384
    assert TaskConfig(name="sst2").max_length == 128 and TaskConfig(name="notes.txt").max_length == 128
    assert TaskConfig(name="gsm8k", max_length=64).max_length == 64
    assert default_lengths("dolly15k") == (128, 64)
    assert FinetuneConfig(task="gsm8k").train.max_new_tokens == 256
    assert FinetuneConfig(task="sst2").train.max_new_tokens == 64
    assert FinetuneConfig(task="gsm8k", train={"max_new_tokens": 16}).train.max_new_tokens == 16
    fed = FederatedConfig(algorithm="fedit", task="gsm8k")
    assert (fed.max_length, fed.max_new_tokens) == (384, 256)
    fed = FederatedConfig(algorithm="fedit", task="dolly", max_length=40, max_new_tokens=4)
    assert (fed.max_length, fed.max_new_tokens) == (40, 4)


def test_gsm8k_defaults_keep_nearly_every_row_and_answer_whole(smol_tokenizer):
    """The reason for GSM8K's lengths, measured on its own rows with the bundled model's tokenizer."""
    task = load_task("gsm8k", train_samples=400, dev_samples=200)
    max_length, new_tokens = default_lengths("gsm8k")
    feat = Featurizer(task, smol_tokenizer, "lm", max_length)
    feat.encode(task.train)
    assert feat.cut / len(task.train) < 0.05
    dev = feat.encode(task.dev)
    note = long_answer_notes(feat, dev, new_tokens, "--max-new-tokens")
    long = int(note[0].split()[0]) if note else 0
    assert long / len(dev) < 0.05
    old = Featurizer(task, smol_tokenizer, "lm", 128)
    old.encode(task.train)
    assert old.cut / len(task.train) > 0.5  # what the general default did to them


def test_eval_cuts_rows_to_the_adapters_own_length(tmp_path):
    (tmp_path / ADAPTER_NOTE).write_text(json.dumps({"method": "lora", "options": {}, "head": "lm", "max_length": 48}))
    assert eval_task_config("sst2", {}, adapter=tmp_path).max_length == 48
    assert eval_task_config("sst2", {}, max_length=96, adapter=tmp_path).max_length == 96
    assert eval_task_config("gsm8k", {}).max_length == 384
    (tmp_path / ADAPTER_NOTE).write_text(json.dumps({"method": "lora", "options": {}, "head": "lm"}))  # older note
    assert eval_task_config("sst2", {}, adapter=tmp_path).max_length == 128


def test_launch_scores_generation_with_the_tasks_new_tokens(monkeypatch):
    """Launch scored every generation task with 32 new tokens, fewer than finetune's 64, and refused
    train.max_new_tokens; it now takes the task's own, or the one given."""
    import edgeft.train.evaluate as evaluate_module
    from edgeft.runtime.strategies.common import evaluate_full

    seen = []
    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: seen.append(a[-1]) or {"exact_match": 0.0})
    for given, want in ((None, 256), (12, 12)):
        train = RuntimeTrain(max_new_tokens=given)
        ctx = SimpleNamespace(dev_feats=[{"id": "x"}], task=SimpleNamespace(name="gsm8k"), featurizer=None,
                              spec=SimpleNamespace(train=train), group=SimpleNamespace(device=torch.device("cpu")),
                              log=lambda *a, **k: None)
        evaluate_full(ctx, model=None)
        assert seen[-1] == want


def test_compress_scores_generation_with_the_tasks_new_tokens(monkeypatch, smol_tokenizer):
    """compress scored every generation task with 64 new tokens, below GSM8K's final number."""
    import edgeft.compress.evaluation as evaluation

    seen = []
    monkeypatch.setattr(evaluation, "evaluate", lambda *a: seen.append(a[-1]) or {"exact_match": 0.0})
    evaluation.task_metric(None, smol_tokenizer, "causal_lm", "gsm8k", dev_samples=2)
    evaluation.task_metric(None, smol_tokenizer, "causal_lm", "dolly", dev_samples=2)
    assert seen == [256, 64]
