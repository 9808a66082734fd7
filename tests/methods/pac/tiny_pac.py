"""A PAC model on a tiny backbone, and its logits on a few rows: what the option tests (out_scale, side_attention)
build before they compare one setting with another."""

import torch

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.methods import get_method
from edgeft.models import load_backbone


def prepare_pac(path, task: str = "sst2", head: str = "causal_lm", **options):
    """(task, backbone, featurizer, PAC method, PAC model): 12 training rows, max length 24, an fp32 cache, no dropout,
    seed 0; `options` are PAC's."""
    t = load_task(TaskConfig(name=task, train_samples=12, dev_samples=4, max_length=24))
    bb = load_backbone(str(path), head=head, num_labels=t.num_labels)
    feat = Featurizer(t, bb.tokenizer, objective_for(t, bb.head), 24)
    torch.manual_seed(0)
    method = get_method("pac", {"cache_dtype": "fp32", "dropout": 0.0, **options})
    return t, bb, feat, method, method.prepare(bb, t)


def eval_logits(model, feat, rows) -> torch.Tensor:
    """The model's logits on `rows`, in eval mode, without gradients."""
    batch = feat.collate(feat.encode(rows))
    model.eval()
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], sample_ids=batch["ids"]).logits
