import shutil

import pytest
import torch

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import ConfigError, ModelError
from edgeft.methods import METHODS, get_method
from edgeft.methods.base import check_backbone_matches, read_adapter_note, write_adapter_note
from edgeft.models import load_backbone
from edgeft.train.objective import forward


def _setup(path, head, method, options=None):
    task = load_task(TaskConfig(name="sst2", train_samples=16, dev_samples=8, max_length=32))
    bb = load_backbone(str(path), head=head, num_labels=2)
    feat = Featurizer(task, bb.tokenizer, objective_for(task, head), 32)
    m = get_method(method, options)
    model = m.prepare(bb, task)
    batch = feat.collate(feat.encode(task.train[:8]))
    return task, bb, feat, m, model, batch


@pytest.mark.parametrize("method", ["full", "lora", "prompt", "bitfit"])
@pytest.mark.parametrize("family,head", [("llama", "causal_lm"), ("bert", "sequence_classification")])
def test_each_method_trains_only_its_parameters_and_lowers_the_loss(method, family, head, tiny_llama, tiny_bert):
    torch.manual_seed(0)
    path = tiny_llama if family == "llama" else tiny_bert
    task, bb, feat, m, model, batch = _setup(path, head, method, {"init": "random"} if method == "prompt" else None)
    params = m.trainable_parameters(model)
    n_train = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    assert 0 < n_train <= n_total
    if method != "full":
        assert n_train < n_total
    opt = torch.optim.AdamW(params, lr=1e-3 if method in ("full", "bitfit") else 1e-2)

    def clean_loss() -> float:  # without dropout: one training step's loss also moves with its dropout masks
        model.eval()
        with torch.no_grad():
            return float(forward(model, batch, feat.objective, feat.label_token_ids)[0])

    before = clean_loss()
    model.train()
    for _ in range(15):
        loss = forward(model, batch, feat.objective, feat.label_token_ids)[0]
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert clean_loss() < before


def test_lora_adapter_loads_in_peft_with_the_same_logits(tmp_path, tiny_llama):
    from peft import PeftModel

    task, bb, feat, m, model, batch = _setup(tiny_llama, "causal_lm", "lora")
    with torch.no_grad():  # make the adapter non-trivial
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    model.eval()
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    m.save(model, tmp_path / "adapter")
    fresh = load_backbone(str(tiny_llama), head="causal_lm")
    peft_model = PeftModel.from_pretrained(fresh.model, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_unknown_method_and_option_are_clear():
    with pytest.raises(ConfigError, match="unknown method 'lorra'"):
        get_method("lorra")
    with pytest.raises(ConfigError, match="method 'lora' options: rank: unknown option .*`edgeft methods lora` lists them"):
        get_method("lora", {"rank": 4})
    assert {"full", "lora", "prompt", "bitfit"} <= set(METHODS)


def test_adapter_for_another_backbone_is_refused(tmp_path, tiny_llama, tiny_bert):
    task, bb, feat, m, model, batch = _setup(tiny_llama, "causal_lm", "lora")
    write_adapter_note(tmp_path, m, bb, task)
    other = load_backbone(str(tiny_bert), head="sequence_classification")
    with pytest.raises(ModelError, match="trained on backbone"):
        check_backbone_matches(read_adapter_note(tmp_path), other, tmp_path)


def test_prompt_tuning_trains_a_language_modelling_task(tiny_llama):
    """Virtual tokens lengthen the logits; the LM loss must score only the real positions."""
    torch.manual_seed(0)
    task = load_task(TaskConfig(name="shakespeare", train_samples=8, dev_samples=2, max_length=24))
    bb = load_backbone(str(tiny_llama), head="causal_lm")
    feat = Featurizer(task, bb.tokenizer, "lm", 24)
    m = get_method("prompt", {"init": "random", "num_virtual_tokens": 5})
    model = m.prepare(bb, task)
    batch = feat.collate(feat.encode(task.train[:4]))
    opt = torch.optim.AdamW(m.trainable_parameters(model), lr=1e-2)
    losses = []
    for _ in range(10):
        loss, logits, n_tokens = forward(model, batch, "lm")
        assert logits.shape[1] == batch["labels"].shape[1]
        assert n_tokens == int((batch["labels"][:, 1:] != -100).sum())
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_lora_on_chosen_blocks_wraps_only_those_and_the_planner_refuses_it(family, tiny_llama, tiny_bert):
    import re

    path = tiny_llama if family == "llama" else tiny_bert
    head = "causal_lm" if family == "llama" else "sequence_classification"
    n = load_backbone(str(path), head=head, num_labels=2).arch.num_layers
    _, bb, feat, m, model, batch = _setup(path, head, "lora", {"layers": [n - 1]})
    wrapped = {int(re.search(r"\.(\d+)\.", name).group(1)) for name, _ in model.named_parameters() if "lora_A" in name}
    assert wrapped == {n - 1}
    loss = forward(model, batch, feat.objective, feat.label_token_ids)[0]
    loss.backward()
    assert all(p.grad is not None for p in m.trainable_parameters(model))
    with pytest.raises(ConfigError, match="'layers'.*leave 'layers' out"):
        m.cost_workload(bb.arch)
    with pytest.raises(ConfigError, match=rf"'layers': \[{n}\].*from 0 to {n - 1}"):
        _setup(path, head, "lora", {"layers": [0, n]})


@pytest.mark.parametrize("method, options, match", [
    ("lora", {"r": 0}, "r: Input should be greater than or equal to 1"),  # was PEFT's ValueError traceback
    ("lora", {"dropout": 1.5}, "dropout: Input should be less than 1"),  # was torch's ValueError traceback
    ("lora", {"alpha": 0}, "alpha: Input should be greater than or equal to 1"),  # an update scaled to nothing
    ("prompt", {"num_virtual_tokens": 0}, "num_virtual_tokens: Input should be greater than or equal to 1"),
])
def test_impossible_peft_options_are_refused_when_read(method, options, match):
    """(prompt with 0 virtual tokens trained and saved nothing, without a word)"""
    with pytest.raises(ConfigError, match=match):
        get_method(method, options)


def test_adapter_is_accepted_with_its_model_folder_named_by_another_path(tmp_path, tiny_llama, monkeypatch):
    """A folder given as 'tiny' in one command and '/abs/tiny' (or from another directory) in the next is the same
    backbone: its identity does not depend on the working directory."""
    task, bb, feat, m, model, batch = _setup(tiny_llama, "causal_lm", "lora")
    write_adapter_note(tmp_path / "adapter", m, bb, task)
    monkeypatch.chdir(tiny_llama.parent)
    relative = load_backbone(tiny_llama.name, head="causal_lm")
    check_backbone_matches(read_adapter_note(tmp_path / "adapter"), relative, tmp_path / "adapter")
    monkeypatch.chdir(tmp_path)  # a different folder of the same name elsewhere is not the same backbone
    shutil.copytree(tiny_llama, tmp_path / tiny_llama.name)
    other = load_backbone(tiny_llama.name, head="causal_lm")
    assert other.identity != relative.identity
