"""Calibration batches from a task: the inputs one-shot compression measures its layers on.

GPTQ and SparseGPT use a few hundred thousand tokens of generic text (random 2048-token C4 windows);
edgeft calibrates on the task the model was fine-tuned for (WikiText-2 *validation* text for the
language-modelling figures, so the test text the perplexity is measured on is never seen).
"""

from __future__ import annotations

import random

import torch

from edgeft.data import load_task
from edgeft.data.tasks import task_config, task_label
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import ConfigError, DataError


def calibration_batches(task_name: str | dict, tokenizer, head: str, n_samples: int = 64, seq_len: int = 512,
                        batch_size: int = 8, seed: int = 0) -> list[dict]:
    """`n_samples` sequences (at most seq_len tokens) from the task's training split, in padded batches.

    LM tasks give full windows of seq_len tokens cut from the concatenated text; other tasks give one
    example per sequence (prompt + response, or the classification input), padded per batch.
    """
    if n_samples < 1:
        raise ConfigError(f"calib_samples={n_samples}: need at least one calibration sequence.")
    task = load_task(task_config(task_name, max_length=seq_len, seed=seed))
    featurizer = Featurizer(task, tokenizer, objective_for(task, head), seq_len)
    rng = random.Random(seed)
    examples = list(task.train)
    rng.shuffle(examples)
    # LM text is packed into windows over the shuffled documents; other tasks give one example each
    feats = encode_lm_prefix(featurizer, examples, n_samples, seq_len) if task.kind == "lm" \
        else featurizer.encode(examples[:n_samples])
    if not feats:
        raise DataError(f"task '{task_label(task_name)}' gave no calibration sequences of {seq_len} tokens; "
                        "lower --calib-seq-len or pick a task with more text.")
    feats = feats[:n_samples]
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return [{k: v for k, v in featurizer.collate(feats[i:i + batch_size]).items() if k in keys}
            for i in range(0, len(feats), batch_size)]


def encode_lm_prefix(featurizer, docs: list[dict], windows: int, seq_len: int) -> list[dict]:
    """Pack only as many leading documents as `windows` full windows need (tokenising all text is slow)."""
    chars = windows * seq_len * 6  # generous: English BPE/word tokens average 3-5 characters
    while True:
        total, take = 0, 0
        while take < len(docs) and total < chars:
            total += len(docs[take]["text"])
            take += 1
        feats = featurizer.encode(docs[:take])
        if len(feats) >= windows or take == len(docs):
            return feats[:windows]
        chars *= 2


def count_tokens(batches: list[dict]) -> int:
    return int(sum(int(b["attention_mask"].sum()) for b in batches))


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
