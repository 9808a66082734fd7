"""train.setup builds the session every entry point used to assemble by hand, and builds the same model."""

import pytest
import torch

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.methods import get_method
from edgeft.models import load_backbone
from edgeft.train.loop import seed_everything
from edgeft.train.setup import start_session


def _by_hand(model: str, tcfg: TaskConfig, head_kind: str, method: str, options: dict, seed: int):
    """What finetune, every strategy, calibration and the federated clients each wrote before train.setup."""
    seed_everything(seed)
    task = load_task(tcfg)
    bb = load_backbone(model, head=head_kind, num_labels=task.num_labels,
                       problem_type="regression" if task.kind == "regression" else None)
    feat = Featurizer(task, bb.tokenizer, objective_for(task, head_kind), tcfg.max_length)
    m = get_method(method, options)
    return task, bb, feat, m.prepare(bb, task)


@pytest.mark.parametrize("family,task_name,head,head_kind,method,options,labels", [
    ("bert", "stsb", "auto", "sequence_classification", "lora", {"r": 4}, 1),  # regression: one output, MSE
    ("llama", "sst2", "classifier", "sequence_classification", "full", {}, 2),
    ("llama", "sst2", "auto", "causal_lm", "pac", {"cache": "off"}, None),
])
def test_session_builds_the_same_model_as_the_hand_written_setup(family, task_name, head, head_kind, method, options,
                                                                  labels, tiny_llama, tiny_bert):
    path = str(tiny_llama if family == "llama" else tiny_bert)
    tcfg = TaskConfig(name=task_name, train_samples=16, dev_samples=8, max_length=32)
    task, bb, feat, ref = _by_hand(path, tcfg, head_kind, method, options, seed=3)

    s = start_session(path, tcfg.model_dump(), method, options, head, seed=3)
    model = s.prepare()
    assert s.head == head_kind and s.method.name == method and s.model is model
    if labels is not None:
        assert model.config.num_labels == labels == bb.model.config.num_labels
        assert model.config.problem_type == ("regression" if task_name == "stsb" else None)
    assert s.featurizer.objective == feat.objective
    assert s.featurizer.encode(s.task.train[:4]) == feat.encode(task.train[:4])
    mine, theirs = model.state_dict(), ref.state_dict()
    assert mine.keys() == theirs.keys()
    for k in mine:  # the same seed drew the same head and adapter weights, in the same order
        assert torch.equal(mine[k], theirs[k]), k
    s2 = start_session(path, tcfg, method, options, head, seed=4)
    other = s2.prepare().state_dict()
    assert any(not torch.equal(other[k], mine[k]) for k in mine)  # and the seed matters (the test can fail)
