"""The activation cache's weight fingerprint covers every value of the frozen backbone PAC reads, and
nothing else: one changed weight invalidates the cache, a different task head does not (issue 16)."""

import pytest
import torch

from edgeft.data import TaskConfig, load_task
from edgeft.methods import get_method
from edgeft.models import load_backbone

TASK = {"name": "sst2", "train_samples": 8, "dev_samples": 4, "max_length": 16}


def _key(model_dir, seed=0, head="sequence_classification", edit=None, **options):
    torch.manual_seed(seed)  # the classification head is initialised at random from this seed
    task = load_task(TaskConfig(**TASK))
    bb = load_backbone(str(model_dir), head=head, num_labels=task.num_labels)
    if edit:
        with torch.no_grad():
            edit(bb)
    model = get_method("pac", {"cache": "memory", **options}).prepare(bb, task)
    return model.cache.key


def _bump(tensor_of):
    """Add 1e-3 to flat element 1 of a weight: a strided sample of 256 values per tensor misses it."""
    def edit(bb):
        t = tensor_of(bb)
        assert t.numel() > 512
        t.view(-1)[1] += 1e-3
    return edit


def test_a_different_head_or_seed_keeps_the_cache_valid(tiny_llama):
    a = _key(tiny_llama, seed=0)
    b = _key(tiny_llama, seed=1)
    c = _key(tiny_llama, seed=0, edit=lambda bb: bb.model.score.weight.mul_(3))
    assert a.weights == b.weights == c.weights and a.fingerprint == b.fingerprint == c.fingerprint


@pytest.mark.parametrize("where", ["embedding", "first block", "last tapped block"])
def test_one_changed_backbone_value_invalidates_the_cache(tiny_llama, where):
    tensor = {"embedding": lambda bb: bb.view.embedding.weight,
              "first block": lambda bb: bb.view.blocks[0].mlp.down_proj.weight,
              "last tapped block": lambda bb: bb.view.blocks[-1].self_attn.q_proj.weight}[where]
    assert _key(tiny_llama).weights != _key(tiny_llama, edit=_bump(tensor)).weights


def test_the_final_norm_applied_after_the_taps_is_not_read(tiny_llama):
    edit_norm = lambda bb: bb.view.core.norm.weight.add_(1.0)  # noqa: E731
    assert _key(tiny_llama, edit=edit_norm).weights == _key(tiny_llama).weights


def test_the_fingerprint_is_stable_across_loads(tiny_bert):
    assert _key(tiny_bert).weights == _key(tiny_bert).weights
    word = _bump(lambda bb: bb.view.embedding.word_embeddings.weight)
    assert _key(tiny_bert).weights != _key(tiny_bert, edit=word).weights


def test_cache_hits_and_misses_reach_metrics_and_the_progress_line(tiny_llama, tmp_path):
    from edgeft.train.recipe import config_from_dict, run_finetune

    notes = []

    def factory(total):
        return lambda loss, note="": notes.append(note)

    cfg = config_from_dict({"model": str(tiny_llama), "method": "pac", "out": str(tmp_path / "run"),
                            "eval_before": False, "method_options": {"dropout": 0.0, "width": 8},
                            "task": TASK, "train": {"epochs": 2, "batch_size": 4}})
    metrics = run_finetune(cfg, progress_factory=factory)
    cache = metrics["activation_cache"]
    # every training sample read twice: from the cache, or (on a GPU) from its copy packed on the device
    assert cache["writes"] >= 8 and cache["hits"] + cache["served_on_device"] >= 2 * 8
    import re

    seen = [re.fullmatch(r"cache (\d+) hit / (\d+) miss, (\d+) stored(, \d+ from the device copy)?", n) for n in notes]
    assert len(notes) == 4 and all(seen)  # 2 epochs of 2 steps
    hits = [int(m[1]) for m in seen]
    assert hits == sorted(hits) and 0 < hits[-1] <= cache["hits"]
