"""The figures every compression step is judged by: WikiText-2 perplexity on a fixed sample of the test
text, and the fine-tuning task's own dev metric. Both reuse edgeft's evaluator, so a compressed
model is scored exactly like the fine-tuned one it came from."""

from __future__ import annotations

import math
import time

import torch

from edgeft.compress.calibration import encode_lm_prefix
from edgeft.data import TaskConfig, load_task
from edgeft.data.tasks import default_lengths, task_config, task_label
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import ConfigError
from edgeft.train.evaluate import evaluate


def lm_windows(task_name: str, tokenizer, seq_len: int, windows: int) -> list[list[int]]:
    """The first `windows` blocks of seq_len tokens of an LM task's dev text (documents in file order)."""
    task = load_task(TaskConfig(name=task_name, max_length=seq_len))
    feats = encode_lm_prefix(Featurizer(task, tokenizer, "lm", seq_len), task.dev, windows, seq_len)
    return [f["input_ids"] for f in feats]


@torch.no_grad()
def perplexity_of_windows(model, windows: list[list[int]], batch_size: int = 8, device="cpu", progress=None) -> dict:
    """exp(mean next-token NLL) over fixed windows (each window scored on its own, no carried context)."""
    model.eval()
    nll, n = 0.0, 0
    for i in range(0, len(windows), batch_size):
        ids = torch.tensor(windows[i:i + batch_size], device=device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1].float()
        target = ids[:, 1:]
        nll += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                       reduction="sum"))
        n += target.numel()
        if progress:
            progress()
    return {"perplexity": math.exp(nll / n), "eval_tokens": n, "nll_sum": nll}


def wikitext2_perplexity(model, tokenizer, seq_len: int = 512, windows: int = 32, batch_size: int = 8,
                         progress=None) -> dict:
    t0 = time.perf_counter()
    out = perplexity_of_windows(model, lm_windows("wikitext2", tokenizer, seq_len, windows), batch_size,
                                progress=progress)
    out.update(seq_len=seq_len, windows=windows, seconds=time.perf_counter() - t0)
    return out


def check_scorable(task_ref: str | dict, head: str, model) -> None:
    """Refuse, before any measuring, a task this model cannot be scored on: a text task on a classifier, a
    regression or another number of classes than its classifier has (stsb on a 2-class head was a RuntimeError
    from torch's mse_loss, with a traceback)."""
    task = load_task(task_config(task_ref, train_samples=1, dev_samples=1))
    try:
        objective_for(task, head)
    except ConfigError as err:
        raise ConfigError(f"--eval-task {task_label(task_ref)}: {err} Pick a task this model can do, or none.") from err
    if head != "causal_lm":
        outputs = 1 if task.kind == "regression" else len(task.label_names)
        have = getattr(model.config, "num_labels", outputs)
        if outputs != have:
            raise ConfigError(f"--eval-task {task_label(task_ref)}: a {task.kind} task needs {outputs} classifier "
                              f"output(s), this model's classifier has {have}; score it on the task it was "
                              "fine-tuned for (its adapter's, the default) or give --eval-task none.")


def task_metric(model, tokenizer, head: str, task_name: str | dict, dev_samples: int | None = 200, max_length: int = 256,
                batch_size: int = 8, max_new_tokens: int | None = None, seed: int = 0) -> dict:
    """The task's dev metric (accuracy, Rouge-L, perplexity, ...) as `edgeft eval` computes it: generation answers
    get the task's own number of new tokens (GSM8K's final number comes after 64)."""
    t0 = time.perf_counter()
    task = load_task(task_config(task_name, max_length=max_length, seed=seed))
    max_new_tokens = max_new_tokens or default_lengths(task.name)[1]
    if task.kind != "lm":  # LM dev text is cut into windows below; other tasks sample examples by seed
        task = load_task(task_config(task_name, dev_samples=dev_samples, max_length=max_length, seed=seed))
    featurizer = Featurizer(task, tokenizer, objective_for(task, head), max_length)
    dev = featurizer.encode(task.dev)
    if task.kind == "lm" and dev_samples is not None:
        dev = dev[:dev_samples]  # the first windows of the dev text, as for WikiText-2
    metrics = evaluate(model, task, featurizer, dev, batch_size, "cpu", max_new_tokens)
    out = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    out.update(metric_name=task.metric_name, value=metrics.get(task.metric_name), task=task.name,
               dev_examples=len(dev), seconds=time.perf_counter() - t0)
    return out
