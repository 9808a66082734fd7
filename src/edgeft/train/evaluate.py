"""Dev-set evaluation for every objective: label metrics, perplexity, or generate-and-score."""

from __future__ import annotations

import torch

from edgeft.data.features import Featurizer
from edgeft.data.metrics import perplexity
from edgeft.data.tasks import Task
from edgeft.train.objective import forward, predictions


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.no_grad()
def evaluate(model, task: Task, featurizer: Featurizer, dev_feats: list[dict], batch_size: int = 16,
             device: str | torch.device = "cpu", max_new_tokens: int = 128, progress=None) -> dict:
    """Metrics on dev features; the task's main metric is under task.metric_name."""
    was_training = model.training
    model.eval()
    try:
        if task.kind == "generation":
            return _generate_and_score(model, task, featurizer, dev_feats, batch_size, device, max_new_tokens)
        objective = featurizer.objective
        preds, refs, nll, n_tok = [], [], 0.0, 0
        # Scores pair each prediction with its own reference, so the order is free: batches of similar length
        # pad little (SST-2's 200 dev sentences at batch 32: 34.6 tokens a row instead of 48).
        by_length = sorted(dev_feats, key=lambda f: len(f["input_ids"]))
        for chunk in _batches(by_length, batch_size):
            batch = _to(featurizer.collate(chunk), device)
            loss, logits, n = forward(model, batch, objective, featurizer.label_token_ids)
            if objective == "lm":
                nll += float(loss) * n
                n_tok += n
            else:
                preds += predictions(logits, objective)
                refs += batch["label"].tolist()
            if progress:
                progress()
        if objective == "lm":
            return {"perplexity": perplexity(nll, n_tok), "eval_tokens": n_tok}
        return task.score(preds, refs)
    finally:
        model.train(was_training)


def _to(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _generate_and_score(model, task, featurizer, dev_feats, batch_size, device, max_new_tokens) -> dict:
    tok = featurizer.tokenizer
    outputs, refs = [], []
    for chunk in _batches(dev_feats, batch_size):
        width = max(len(f["prompt_ids"]) for f in chunk)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(f["prompt_ids"])) + f["prompt_ids"] for f in chunk])
        mask = torch.tensor([[0] * (width - len(f["prompt_ids"])) + [1] * len(f["prompt_ids"]) for f in chunk])
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[:, width:]
        outputs += tok.batch_decode(new, skip_special_tokens=True)
        refs += [f["response"] for f in chunk]
    metrics = task.score([o.strip() for o in outputs], refs)
    metrics["samples"] = [{"prediction": o.strip(), "reference": r} for o, r in list(zip(outputs, refs))[:5]]
    return metrics
