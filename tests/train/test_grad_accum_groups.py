"""Gradient accumulation averages each optimizer step's gradient over the batches it really accumulated."""

from __future__ import annotations

from edgeft.methods.base import Method
from edgeft.train.recipe import config_from_dict, run_finetune


def test_a_short_last_accumulation_group_is_averaged_over_its_own_batches(tmp_path, tiny_llama, monkeypatch):
    """3 batches with grad_accum 2: the second update holds one batch, and its gradient was divided by 2 (half the
    mean gradient; clipping and the update saw it scaled down)."""
    scales = []
    real = Method.train_step

    def recording(self, model, batch, loss_fn, scale=1.0):
        scales.append(scale)
        return real(self, model, batch, loss_fn, scale)

    monkeypatch.setattr(Method, "train_step", recording)
    cfg = config_from_dict({
        "model": str(tiny_llama), "method": "lora", "out": str(tmp_path / "run"),
        "task": {"name": "sst2", "train_samples": 24, "dev_samples": 8, "max_length": 24},
        "train": {"epochs": 2, "batch_size": 8, "grad_accum": 2, "lr": 5e-3}})
    run_finetune(cfg)
    assert scales == [0.5, 0.5, 1.0] * 2
