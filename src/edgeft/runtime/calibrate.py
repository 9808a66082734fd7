"""Measured calibration of this host: effective FLOP/s of the real training step, single thread.

Emulated devices are slowed down relative to the host by (host FLOP/s) / (device FLOP/s). "Host
FLOP/s" is measured on the actual model, method and batch shape (the cost model's FLOPs for the
step divided by the measured CPU time), not on a synthetic matmul, so that the emulated device
spends FLOPs/device-rate on this workload, which is what the planner predicts. Cached per shape.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from edgeft.paths import edgeft_home


def step_flops(table) -> float:
    """Forward + backward FLOPs of one training step in the cost model (all blocks train)."""
    return float(table.embed_fwd + table.fwd.sum() + table.head_fwd + table.head_bwd + table.bwd_train.sum())


def _cache_file() -> Path:
    return edgeft_home() / "runtime-calibration.json"


def calibrate(ctx_build, key: dict, flops_fn, repeats: int = 3, use_cache: bool = True) -> dict:
    """ctx_build() -> (model, batch, loss_fn); flops_fn(batch) -> FLOPs of one step on that batch."""
    key = {**key, "torch": torch.__version__, "cpu": platform.processor() or platform.machine()}
    tag = json.dumps(key, sort_keys=True)
    f = _cache_file()
    known = json.loads(f.read_text()) if f.is_file() else {}
    if use_cache and tag in known:
        return {**known[tag], "cached": True}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, batch, loss_fn = ctx_build()
        loss_fn(model, batch).backward()  # warm-up
        model.zero_grad(set_to_none=True)
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(repeats):
            loss_fn(model, batch).backward()
            model.zero_grad(set_to_none=True)
        cpu = (time.process_time() - c0) / repeats
        wall = (time.perf_counter() - w0) / repeats
    finally:
        torch.set_num_threads(threads)
    flops = flops_fn(batch)
    out = {"host_flops": flops / cpu, "step_cpu_s": cpu, "step_wall_s": wall, "step_flops": flops,
           "rows": int(batch["input_ids"].shape[0]), "seq_len": int(batch["input_ids"].shape[1]), "key": key}
    known[tag] = out
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(known, indent=2))
    return {**out, "cached": False}
