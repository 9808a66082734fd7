"""The compiled training step (edgeft.train.compiled): length buckets keep the loss, a compiled step trains as the
eager one does, and what cannot be compiled is refused."""

import pytest
import torch

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import ConfigError
from edgeft.methods import get_method
from edgeft.models import load_backbone
from edgeft.train import compiled
from edgeft.train.compiled import bucket_width, has_cpp_compiler, pad_rows, pad_to_bucket
from edgeft.train.loop import Trainer, TrainConfig
from edgeft.train.objective import forward
from edgeft.train.recipe import make_loss_fn

# (family, head, task): verbalizer (left padding), classifier (right), causal LM (labels padded with -100)
CASES = [("llama", "causal_lm", "sst2"), ("bert", "sequence_classification", "sst2"),
         ("llama", "causal_lm", "shakespeare")]


def _setup(path, head, task, method="lora", n=12, max_length=24, options=None):
    t = load_task(TaskConfig(name=task, train_samples=n, dev_samples=4, max_length=max_length))
    torch.manual_seed(0)  # a classifier head is drawn at load
    bb = load_backbone(str(path), head=head, num_labels=t.num_labels)
    feat = Featurizer(t, bb.tokenizer, objective_for(t, head), max_length)
    m = get_method(method, options or {})
    torch.manual_seed(0)
    return t, feat, m, m.prepare(bb, t)


def _fit(path, head, task, compile="off", epochs=2, batch_size=8, method="lora"):
    # no dropout: compiled graphs draw their random numbers differently (AOTAutograd's functionalised RNG)
    t, feat, m, model = _setup(path, head, task, method, options={"dropout": 0.0} if method == "lora" else None)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-2, device="cpu", compile=compile, warmup_ratio=0)
    trainer = Trainer(model, m, feat, feat.encode(t.train), cfg, make_loss_fn(feat))
    return trainer.fit(), model


def test_bucket_width_rounds_up_within_the_cap():
    assert [bucket_width(w, 64) for w in (1, 16, 17, 33, 64)] == [16, 16, 32, 48, 64]
    assert bucket_width(20, 24) == 24 and bucket_width(30, 24) == 30  # capped, never shorter than the batch


def test_pad_to_bucket_pads_on_the_collate_side_with_masked_values():
    batch = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "labels": torch.tensor([[5, 6, 7]]), "label": torch.tensor([1]), "ids": ["a"]}
    right = pad_to_bucket(batch, pad_id=0, left=False, cap=64, bucket=4)
    assert right["input_ids"].tolist() == [[5, 6, 7, 0]] and right["attention_mask"].tolist() == [[1, 1, 1, 0]]
    assert right["labels"].tolist() == [[5, 6, 7, -100]] and right["label"] is batch["label"]
    left = pad_to_bucket(batch, pad_id=9, left=True, cap=64, bucket=4)
    assert left["input_ids"].tolist() == [[9, 5, 6, 7]] and left["attention_mask"].tolist() == [[0, 1, 1, 1]]


def test_pad_rows_adds_ignored_filler_rows():
    batch = {"input_ids": torch.tensor([[5, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 0]]),
             "label": torch.tensor([1]), "ids": ["a"]}
    out = pad_rows(batch, 3, pad_id=0, left=False)
    assert out["input_ids"].tolist() == [[5, 6, 0], [0, 0, 0], [0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 0], [1, 0, 0], [1, 0, 0]]  # one attended token: no NaN
    assert out["label"].tolist() == [1, -100, -100]
    assert pad_rows(batch, 3, pad_id=0, left=True)["attention_mask"][1].tolist() == [0, 0, 1]


def _loss_and_grads(model, batch, feat):
    model.zero_grad()
    loss = forward(model, batch, feat.objective, feat.label_token_ids)[0]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family,head,task", CASES)
def test_bucket_and_row_padding_keep_the_loss_and_gradients(family, head, task, tiny_llama, tiny_bert):
    t, feat, _, model = _setup(tiny_llama if family == "llama" else tiny_bert, head, task, max_length=40)
    model.eval()  # no dropout
    batch = feat.collate(feat.encode(t.train)[:5])
    left = feat.padding_side == "left"
    padded = pad_rows(pad_to_bucket(batch, feat.tokenizer.pad_token_id, left, cap=64, bucket=32), 8,
                      feat.tokenizer.pad_token_id, left)
    assert padded["input_ids"].shape[0] == 8 and padded["input_ids"].shape[1] > batch["input_ids"].shape[1]
    a, ga = _loss_and_grads(model, batch, feat)
    b, gb = _loss_and_grads(model, padded, feat)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (float(a), float(b))
    for n in ga:
        assert torch.allclose(ga[n], gb[n], rtol=1e-4, atol=1e-6), n


# torch < 2.7 refuses compile (below): transformers' models call torch.compiler.is_exporting, which it lacks
COMPILES = pytest.mark.skipif(not compiled.torch_compiles_transformers(), reason="compile needs torch 2.7+")


@COMPILES
@pytest.mark.parametrize("family,head,task", CASES[:2])
def test_compiled_step_trains_as_the_eager_step(family, head, task, tiny_llama, sst2_bert, monkeypatch):
    """aot_eager: dynamo and AOTAutograd's forward+backward graphs without a C++ compiler (inductor: below)."""
    monkeypatch.setattr(Trainer, "compile_backend", "aot_eager")
    path = tiny_llama if family == "llama" else sst2_bert  # a BERT without dropout
    ref, ref_model = _fit(path, head, task, epochs=1)
    got, model = _fit(path, head, task, compile="default", epochs=1)
    assert ref.compile is None and got.compile["backend"] == "aot_eager"
    assert len(got.losses) == len(ref.losses) == 2  # 12 samples, batch 8: a full batch and a short last one
    assert torch.allclose(torch.tensor(got.losses), torch.tensor(ref.losses), rtol=1e-4, atol=1e-5)
    for (n, a), (_, b) in zip(ref_model.named_parameters(), model.named_parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5), n
    # bounded shapes: every batch one bucket wide (max length 24 caps the bucket), the short one given filler rows
    assert {tuple(s) for s in got.compile["shapes"]} <= {(8, 16), (8, 24)} and got.compile["filler_rows"]


@COMPILES
@pytest.mark.skipif(not has_cpp_compiler(), reason="inductor on a CPU needs a C++ compiler")
def test_inductor_compiled_step_matches_eager(sst2_bert):
    ref, _ = _fit(sst2_bert, "sequence_classification", "sst2", epochs=1, batch_size=12)
    got, _ = _fit(sst2_bert, "sequence_classification", "sst2", compile="reduce-overhead", epochs=1, batch_size=12)
    assert got.compile["mode"] == "default" and got.compile["requested"] == "reduce-overhead"  # no graphs on CPU
    assert not got.compile["cuda_graphs"] and got.compile["backend"] == "inductor"
    assert torch.allclose(torch.tensor(got.losses), torch.tensor(ref.losses), rtol=1e-4, atol=1e-5)


def test_compile_is_refused_for_pac_and_forward_only_methods(tiny_llama):
    for method, why in (("pac", "graphs"), ("mezo", "backprop")):
        t, feat, m, model = _setup(tiny_llama, "causal_lm", "sst2", method=method)
        cfg = TrainConfig(epochs=1, batch_size=8, device="cpu", compile="default")
        with pytest.raises(ConfigError, match=why):
            Trainer(model, m, feat, feat.encode(t.train), cfg, make_loss_fn(feat))


@COMPILES  # else refused for the torch first
def test_compile_on_cpu_without_a_cpp_compiler_is_refused(tiny_llama, monkeypatch):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    t, feat, m, model = _setup(tiny_llama, "causal_lm", "sst2")
    cfg = TrainConfig(epochs=1, batch_size=8, device="cpu", compile="reduce-overhead")
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        Trainer(model, m, feat, feat.encode(t.train), cfg, make_loss_fn(feat))


def test_compile_on_a_torch_without_is_exporting_is_refused(tiny_llama, monkeypatch):
    monkeypatch.setattr(compiled, "torch_compiles_transformers", lambda: False)  # as under torch 2.6
    t, feat, m, model = _setup(tiny_llama, "causal_lm", "sst2")
    cfg = TrainConfig(epochs=1, batch_size=8, device="cpu", compile="default")
    with pytest.raises(ConfigError, match="torch 2.7 or newer"):
        Trainer(model, m, feat, feat.encode(t.train), cfg, make_loss_fn(feat))


def test_compile_is_off_by_default_and_refused_by_the_launcher():
    from edgeft.runtime.spec import RuntimeTrain

    assert TrainConfig().compile == "off"
    with pytest.raises(ValueError, match="compile"):
        RuntimeTrain(compile="default")
    with pytest.raises(ValueError):
        TrainConfig(compile="max-autotune")
