"""Generalized knowledge distillation (GKD; Agarwal et al., ICLR 2024) from the fine-tuned teacher into a
smaller or pruned student.

Each step draws a batch of inputs x from the task. With probability lmbda the student writes its own
continuation y ~ p_S(.|x) (on-policy: it learns from the states its own mistakes lead to); otherwise
y is the task's reference continuation (supervised KD). The loss is the generalized Jensen-Shannon
divergence between teacher and student next-token distributions on every token of y:
  JSD(beta)(T || S) = beta KL(T || M) + (1 - beta) KL(S || M),   M = beta T + (1 - beta) S,
with beta = 0 meaning forward KL(T || S) and beta = 1 reverse KL(S || T). The loss and the defaults
(beta 0.5, lmbda 0.5, sampling temperature 0.9) follow TRL's GKDTrainer (trl.experimental.gkd); the
loop is written here because TRL's trainer needs `datasets` and the HF Trainer, while this one
trains any model edgeft can load, including structurally pruned ones with per-layer shapes.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from edgeft.data import load_task
from edgeft.data.tasks import task_config
from edgeft.data.features import Featurizer
from edgeft.errors import ConfigError, ModelError


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None,
                    beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Mean generalized JSD over the positions where labels != -100 (TRL's generalized_jsd_loss)."""
    s = F.log_softmax(student_logits / temperature, dim=-1)
    t = F.log_softmax(teacher_logits / temperature, dim=-1)
    if beta == 0:
        jsd = F.kl_div(s, t, reduction="none", log_target=True)  # KL(T || S)
    elif beta == 1:
        jsd = F.kl_div(t, s, reduction="none", log_target=True)  # KL(S || T)
    else:
        b = torch.tensor(beta, dtype=s.dtype, device=s.device)
        mix = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
        jsd = b * F.kl_div(mix, t, reduction="none", log_target=True) + \
            (1 - b) * F.kl_div(mix, s, reduction="none", log_target=True)
    jsd = jsd.sum(-1)  # over the vocabulary: one divergence per position
    if labels is not None:
        mask = labels != -100
        return jsd[mask].sum() / mask.sum().clamp_min(1)
    return jsd.mean()


@dataclass
class Pair:
    prompt: list[int]
    completion: list[int]


def distill_pairs(task_name: str | dict, tokenizer, n: int, prompt_len: int, completion_len: int, seed: int = 0) -> list[Pair]:
    """(x, y) pairs from the task's training split: instruction -> response, or text prefix -> continuation."""
    task = load_task(task_config(task_name, max_length=prompt_len + completion_len, seed=seed))
    if task.kind in ("classification", "regression"):
        raise ConfigError(f"distill: task '{task_name}' is a {task.kind} task; GKD distils text generation "
                          "(use an LM task such as wikitext2/shakespeare or an instruction task such as dolly).")
    examples = list(task.train)
    random.Random(seed).shuffle(examples)
    featurizer = Featurizer(task, tokenizer, "lm", prompt_len + completion_len)
    pairs = []
    if task.kind == "lm":
        for f in featurizer.encode(examples)[:n]:
            ids = f["input_ids"]
            pairs.append(Pair(ids[:prompt_len], ids[prompt_len:prompt_len + completion_len]))
    else:
        for f in featurizer.encode(examples[:n]):
            cut = len(f["prompt_ids"])
            pairs.append(Pair(f["input_ids"][:cut][-prompt_len:], f["input_ids"][cut:][:completion_len]))
    pairs = [p for p in pairs if p.prompt and p.completion]
    if not pairs:
        raise ConfigError(f"distill: task '{task_name}' gave no (prompt, completion) pairs.")
    return pairs


def _left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    return ids, mask


def supervised_batch(pairs: list[Pair], pad: int) -> dict:
    """Left-padded prompts followed by right-padded reference completions; labels only on completions."""
    prompts, pmask = _left_pad([p.prompt for p in pairs], pad)
    width = max(len(p.completion) for p in pairs)
    comp = torch.tensor([p.completion + [pad] * (width - len(p.completion)) for p in pairs])
    cmask = torch.tensor([[1] * len(p.completion) + [0] * (width - len(p.completion)) for p in pairs])
    ids = torch.cat([prompts, comp], 1)
    mask = torch.cat([pmask, cmask], 1)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :prompts.shape[1]] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def on_policy_batch(student, pairs: list[Pair], pad: int, eos: int | None, max_new_tokens: int,
                    temperature: float) -> dict:
    """The student's own sampled continuations of the prompts (masked after its first EOS), as in TRL."""
    prompts, pmask = _left_pad([p.prompt for p in pairs], pad)
    was_training = student.training
    student.eval()
    out = student.generate(input_ids=prompts, attention_mask=pmask, do_sample=True, temperature=temperature,
                           top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos)
    student.train(was_training)
    plen = prompts.shape[1]
    comp = out[:, plen:]
    if eos is not None:
        is_eos = comp == eos
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full((comp.shape[0],), comp.shape[1]))
        cmask = (torch.arange(comp.shape[1])[None, :] <= first[:, None]).long()
    else:
        cmask = torch.ones_like(comp)
    mask = torch.cat([pmask, cmask], 1)
    labels = out.masked_fill(mask == 0, -100)
    labels[:, :plen] = -100
    return {"input_ids": out, "attention_mask": mask, "labels": labels}


class DistillOptions(BaseModel):
    """`edgeft compress --method distill` options: where the teacher comes from and the GKD knobs (TRL's
    defaults). One class for the command and for `gkd`, so an option cannot be offered and then dropped."""

    model_config = ConfigDict(extra="forbid")

    teacher: str = Field(description="alias, model folder or compressed folder: usually the fine-tuned model")
    teacher_adapter: Optional[str] = Field(None, description="the fine-tuning result, merged into the teacher")
    pairs: int = Field(256, ge=1, description="task prompts (with their reference continuations) to train on")
    steps: int = Field(40, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(5e-5, gt=0)
    beta: float = Field(0.5, ge=0.0, le=1.0, description="0: forward KL(T||S), 1: reverse KL(S||T)")
    lmbda: float = Field(0.5, ge=0.0, le=1.0, description="share of on-policy batches (the student's own text)")
    temperature: float = Field(0.9, gt=0)
    max_new_tokens: int = Field(64, ge=1)
    prompt_len: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: Optional[int] = Field(None, description="default: the compress run's seed")


@dataclass
class GKDResult:
    losses: list[float] = field(default_factory=list)
    on_policy: list[bool] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)


def check_compatible(student, teacher, student_tok, teacher_tok) -> None:
    s_vocab = student.get_output_embeddings().weight.shape[0]
    t_vocab = teacher.get_output_embeddings().weight.shape[0]
    if s_vocab != t_vocab or len(student_tok) != len(teacher_tok) or \
            student_tok.encode("The teacher speaks.") != teacher_tok.encode("The teacher speaks."):
        raise ModelError(f"distill: student (vocabulary {s_vocab}) and teacher (vocabulary {t_vocab}) do not share a "
                         "tokenizer; GKD compares next-token distributions, so they must.")


def gkd(student, teacher, tokenizer, pairs: list[Pair], cfg: DistillOptions, progress=None) -> GKDResult:
    """Train `student` in place for cfg.steps GKD steps; the teacher is only run forward."""
    if not 0.0 <= cfg.beta <= 1.0 or not 0.0 <= cfg.lmbda <= 1.0:
        raise ConfigError(f"distill: beta ({cfg.beta}) and lmbda ({cfg.lmbda}) must lie in [0, 1].")
    seed = cfg.seed or 0
    rng = random.Random(seed)
    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    params = [p for p in student.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = GKDResult()
    order = list(range(len(pairs)))
    pos = len(order)
    student.train()
    for _ in range(cfg.steps):
        t0 = time.perf_counter()
        if pos + cfg.batch_size > len(order):
            rng.shuffle(order)
            pos = 0
        chunk = [pairs[i] for i in order[pos:pos + cfg.batch_size]]
        pos += cfg.batch_size
        on_policy = rng.random() <= cfg.lmbda
        batch = on_policy_batch(student, chunk, pad, eos, cfg.max_new_tokens, cfg.temperature) if on_policy \
            else supervised_batch(chunk, pad)
        with torch.no_grad():
            t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = generalized_jsd(s_logits[:, :-1].float(), t_logits[:, :-1].float(), batch["labels"][:, 1:], cfg.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ModelError("distill: the loss became non-finite; lower the learning rate.")
        result.losses.append(value)
        result.on_policy.append(on_policy)
        result.step_seconds.append(time.perf_counter() - t0)
        if progress:
            progress(value)
    student.eval()
    for p in params:
        p.requires_grad_(False)
    return result
