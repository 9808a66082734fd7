"""A PAC model on a tiny backbone, and its logits on a few rows: what the option tests (out_scale, side_attention)
build before they compare one setting with another."""

import torch

from test_pac_model import setup


def prepare_pac(path, task: str = "sst2", head: str = "causal_lm", **options):
    """(task, backbone, featurizer, PAC method, PAC model) from test_pac_model.setup: 12 training rows, max length 24,
    an fp32 cache and no dropout unless `options` (PAC's) say otherwise."""
    return setup(path, head, {"cache_dtype": "fp32", "dropout": 0.0, **options}, task=task, n=12, max_length=24)


def eval_logits(model, feat, rows) -> torch.Tensor:
    """The model's logits on `rows`, in eval mode, without gradients."""
    batch = feat.collate(feat.encode(rows))
    model.eval()
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], sample_ids=batch["ids"]).logits
