"""The one optimizer builder: AdamW with the configured warm-up schedule, for the single-device loop
and every runtime strategy alike (so their runs are step-for-step comparable). Parameters stay fp32 (the
master weights) under every precision (edgeft.train.precision)."""

from __future__ import annotations

import torch


def build_optimizer(params: list, cfg, lr: float, total_steps: int):
    """(AdamW, LambdaLR schedule) over `params` with `cfg`'s weight decay, warm-up ratio and schedule
    kind; (None, None) when nothing trains (no parameters, or a method that steps itself)."""
    if not params:
        return None, None
    from transformers import get_scheduler

    # On CUDA, one fused kernel updates every parameter (instead of a handful of launches per tensor); elsewhere
    # the default implementation, so CPU runs stay bit-identical.
    fused = all(p.is_cuda and p.is_floating_point() for p in params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, **({"fused": True} if fused else {}))
    sched = get_scheduler(cfg.scheduler if cfg.scheduler != "constant" else "constant_with_warmup", opt,
                          num_warmup_steps=int(cfg.warmup_ratio * total_steps), num_training_steps=total_steps)
    return opt, sched
