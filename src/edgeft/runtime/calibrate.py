"""Measured calibration of this host: effective FLOP/s of the real training step, single thread.

Emulated devices are slowed down relative to the host by (host FLOP/s) / (device FLOP/s). "Host
FLOP/s" is measured on the actual model, method and the shapes a device runs in this run (its rows of
the run's own batches, padded as the runtime pads them), not on a synthetic matmul nor on a few short
samples, so that the emulated device spends FLOPs/device-rate on this workload, which is what the
planner predicts. Two per-step costs the FLOP count does not describe are measured too:
- `step_fixed_s`: host work of a step outside the emulated compute sections (collating the batch,
  the gradient-norm reduction, the optimizer update); the runtime does not stretch it.
- `trainable_params`: the built model's trainables (what the runtime all-reduces or broadcasts).
- `cached_step_flops`, `cached_call_flops`: for PAC, a step on the activation cache (cache lookup +
  int8 decode + the side network), timed on one row and on all rows of the run's batches and split
  into a cost per sample and a cost per call (a device's step pays it once, whatever its rows: on
  SmolLM2 it was more than half of a 2-row step), both as effective FLOPs (CPU time x host FLOP/s):
  the emulator stretches them by the slowdown like any compute, so the planner divides them by the
  device's rate like FLOPs. `cached_rows_flops[r-1]`: the same step measured at every row count r
  (the cost is not linear in rows); the launcher's cached-epoch prediction looks the busiest owner's
  rows up there, the line is kept for the planner's even-split estimate beyond the measured rows.
Cached per shape.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from edgeft.paths import edgeft_home


VERSION = 5  # of what measure() returns: entries cached by another version are measured again


def step_flops(table) -> float:
    """Forward + backward FLOPs of one training step in the cost model (all blocks train)."""
    return float(table.embed_fwd + table.fwd.sum() + table.head_fwd + table.head_bwd + table.bwd_train.sum())


@dataclass
class Bench:
    """What calibrate() times; built lazily (loading the model is the slow part) only on a cache miss."""

    model: torch.nn.Module
    loss_fn: Callable
    batches: list[dict]  # one device's rows of the run's batches, without sample ids (no activation cache)
    collate: Callable[[], dict]  # what every rank collates per step (the whole batch)
    cached_batches: list[dict] | None = None  # PAC: whole batches with sample ids, for steps on the activation cache


def _cache_file() -> Path:
    return edgeft_home() / "runtime-calibration.json"


def _cpu_of(fn, repeats: int) -> float:
    c0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - c0) / repeats


def _train(model, loss_fn, batch) -> None:
    loss_fn(model, batch).backward()
    model.zero_grad(set_to_none=True)


def _rows(batch: dict, n: int) -> dict:
    return {k: (v[:n] if torch.is_tensor(v) or isinstance(v, list) else v) for k, v in batch.items()}


def measure(bench: Bench, flops_fn, repeats: int = 3) -> dict:
    """The measurements themselves (one thread): see the module doc."""
    model, loss_fn = bench.model, bench.loss_fn
    _train(model, loss_fn, bench.batches[0])  # warm-up
    cpu, flops, wall0 = 0.0, 0.0, time.perf_counter()
    for _ in range(repeats):
        for b in bench.batches:
            cpu += _cpu_of(lambda: _train(model, loss_fn, b), 1)
            flops += flops_fn(b)
    n = repeats * len(bench.batches)
    host_flops = flops / cpu
    out = {"host_flops": host_flops, "step_cpu_s": cpu / n, "step_wall_s": (time.perf_counter() - wall0) / n,
           "step_flops": flops / n, "rows": int(bench.batches[0]["input_ids"].shape[0]),
           "seq_len": sum(int(b["input_ids"].shape[1]) for b in bench.batches) / len(bench.batches)}
    params = [p for p in model.parameters() if p.requires_grad]
    out["trainable_params"] = sum(p.numel() for p in params)  # what every step all-reduces / deft broadcasts
    opt = torch.optim.AdamW(params, lr=1e-6)
    loss_fn(model, bench.batches[0]).backward()

    def fixed():  # as a runtime step outside its compute sections: collate, norm, update, zero
        bench.collate()
        sq = torch.zeros(1, dtype=torch.float64)
        for p in params:
            if p.grad is not None:
                sq += p.grad.detach().double().pow(2).sum()
        opt.step()
        for p in params:
            p.grad = torch.zeros_like(p)

    fixed()  # AdamW creates its state on the first step
    out["step_fixed_s"] = _cpu_of(fixed, repeats)
    model.zero_grad(set_to_none=True)
    if bench.cached_batches:
        cbs = bench.cached_batches
        for cb in cbs:
            loss_fn(model, cb)  # fills the activation cache for these samples
        _train(model, loss_fn, cbs[0])
        # A step at every row count a device can get (1 .. the batch's rows): the cost is not linear in
        # rows (SmolLM2 PAC, one process: 1 row 0.029 s, 2 rows 0.057, 3 rows 0.084, 4 rows 0.056, 8 rows
        # 0.080), so a line through 1 and 8 rows missed the 2-3 row steps the hashed cache owners get by
        # 2x. Each pass reads the first r rows of every batch once, as a cached epoch reads its samples.
        most = max(int(cb["input_ids"].shape[0]) for cb in cbs)
        by_rows = []
        for r in range(1, most + 1):
            sub = [_rows(cb, r) for cb in cbs if int(cb["input_ids"].shape[0]) >= r]
            by_rows.append(_cpu_of(lambda: [_train(model, loss_fn, cb) for cb in sub], repeats) / len(sub))
        one, whole = by_rows[0], by_rows[-1]
        per = max(whole - one, 0.0) / max(most - 1, 1)  # the line through (1, one) and (rows, whole)
        out.update(cached_step_cpu_s=whole, cached_one_row_cpu_s=one, cached_rows=most,
                   cached_rows_cpu_s=by_rows, cached_rows_flops=[c * host_flops for c in by_rows],
                   cached_step_flops=per * host_flops, cached_call_flops=max(one - per, 0.0) * host_flops)
    return out


def calibrate(bench_build: Callable[[], Bench], key: dict, flops_fn, repeats: int = 3,
              use_cache: bool = True) -> dict:
    """bench_build() -> Bench; flops_fn(batch) -> the cost model's FLOPs of one step on that batch."""
    key = {**key, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "version": VERSION}
    tag = json.dumps(key, sort_keys=True)
    f = _cache_file()
    known = json.loads(f.read_text()) if f.is_file() else {}
    if use_cache and tag in known:
        return {**known[tag], "cached": True}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {**measure(bench_build(), flops_fn, repeats), "key": key}
    finally:
        torch.set_num_threads(threads)
    known[tag] = out
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(known, indent=2))
    return {**out, "cached": False}
