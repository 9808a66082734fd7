"""PAC's default learning rate depends on the backbone: 2e-3 for an encoder (BERT) with its task head, chosen on
held-out training rows over the quality suite's six tasks (MiniLM-L6, docs/benchmarks_pac.md); 1e-3 for a causal
LM (the same rule on SmolLM2-135M's six tasks). An explicit lr always wins."""

import pytest
import torch

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.methods import get_method
from edgeft.models import load_backbone
from edgeft.train.loop import TrainConfig, Trainer


def _prepared(path, head):
    t = load_task(TaskConfig(name="rte", train_samples=8, dev_samples=4, max_length=24))
    bb = load_backbone(str(path), head=head, num_labels=t.num_labels)
    feat = Featurizer(t, bb.tokenizer, objective_for(t, bb.head), 24)
    method = get_method("pac", {"cache_dtype": "fp32"})
    return t, feat, method, method.prepare(bb, t)


@pytest.mark.parametrize("fixture, head, lr", [("tiny_bert", "sequence_classification", 2e-3),
                                               ("tiny_llama", "causal_lm", 1e-3)])
def test_pac_default_lr_depends_on_the_backbone(request, fixture, head, lr):
    t, feat, method, model = _prepared(request.getfixturevalue(fixture), head)
    assert method.lr_for(model) == lr
    feats = feat.encode(t.train)
    trainer = Trainer(model, method, feat, feats, TrainConfig(epochs=1, batch_size=4, device="cpu"), lambda m, b: None)
    assert trainer.lr == lr
    explicit = Trainer(model, method, feat, feats, TrainConfig(epochs=1, batch_size=4, device="cpu", lr=1e-4),
                       lambda m, b: None)
    assert explicit.lr == 1e-4


def test_other_methods_keep_their_class_default(tiny_bert):
    lora = get_method("lora", {})
    assert lora.lr_for(torch.nn.Linear(2, 2)) == lora.default_lr
