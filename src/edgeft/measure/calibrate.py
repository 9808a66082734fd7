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
  device's rate like FLOPs. `cached_rows_flops[r-1]`: the same step at every row count r (the cost is
  not linear in rows; timed at 1..8 rows and about 1.5x apart beyond, linear in between); the launcher's cached-epoch prediction looks the busiest owner's
  rows up there, the line is kept for the planner's even-split estimate beyond the measured rows.
Cached per shape for an hour (MAX_AGE_S).
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


VERSION = 9  # of what measure() returns: entries cached by another version are measured again


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
    embed: torch.nn.Module | None = None  # the embedding and the blocks, to time each part of a step (PartClock)
    blocks: list | None = None


# This host's speed drifts (a shared 2-core VM measured 37 and 44 GFLOP/s on one workload an hour
# apart), so a calibration older than this is measured again rather than trusted.
MAX_AGE_S = 3600.0


def _cache_file() -> Path:
    return edgeft_home() / "runtime-calibration.json"


def _cpu_of(fn, repeats: int) -> float:
    c0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - c0) / repeats


class PartClock:
    """CPU time of each part of a training step, from hooks on the embedding and on every block.

    A block's forward runs between its forward pre-hook and forward hook; its backward starts when the
    gradient of its output arrives and ends when the gradient of its input does (tensor hooks; one
    thread, so the autograd engine runs the blocks one after another). Whatever the step spends
    elsewhere (masks, final norm, head, loss, the optimizer-free rest) is `rest`. Why: a FLOP count
    prices the embedding and a block's fixed per-call work at almost nothing, so a device that runs
    the embedding and one block (split's device side) took ~1.9x its FLOP share of the step.
    """

    def __init__(self, embed, blocks):
        self.fwd, self.bwd = [0.0] * len(blocks), [0.0] * len(blocks)
        self.embed = self.total = 0.0
        self._t: dict = {}
        self._handles = []
        clock = time.process_time
        if embed is not None:
            self._handles += [embed.register_forward_pre_hook(lambda m, a: self._t.__setitem__("e", clock())),
                              embed.register_forward_hook(lambda m, a, o: self._add_embed(clock()))]
        for i, blk in enumerate(blocks):
            self._handles += [blk.register_forward_pre_hook(self._pre(i, clock), with_kwargs=True),
                              blk.register_forward_hook(self._post(i, clock), with_kwargs=True)]

    def _add_embed(self, t):
        self.embed += t - self._t.pop("e", t)

    @staticmethod
    def _hidden(args, kwargs, out=None):
        x = out if out is not None else (args[0] if args else kwargs.get("hidden_states"))
        x = x[0] if isinstance(x, (tuple, list)) else x
        return x if torch.is_tensor(x) and x.requires_grad else None

    def _pre(self, i, clock):
        def hook(mod, args, kwargs):
            self._t[("f", i)] = clock()
            x = self._hidden(args, kwargs)
            if x is not None:  # the gradient of the block's input: its backward is over
                x.register_hook(lambda g: self._end_bwd(i, clock()))
        return hook

    def _post(self, i, clock):
        def hook(mod, args, kwargs, out):
            t = clock()
            self.fwd[i] += t - self._t.pop(("f", i), t)
            y = self._hidden(args, kwargs, out)
            if y is not None:  # the gradient of the block's output: its backward starts
                y.register_hook(lambda g: self._t.__setitem__(("b", i), clock()))
        return hook

    def _end_bwd(self, i, t):
        self.bwd[i] += t - self._t.pop(("b", i), t)

    def step_done(self):
        """After backward: a block whose input needs no gradient (the first trained one) ends here."""
        t = time.process_time()
        for key in [k for k in self._t if isinstance(k, tuple) and k[0] == "b"]:
            self.bwd[key[1]] += t - self._t.pop(key)

    def remove(self):
        for h in self._handles:
            h.remove()

    def fractions(self) -> dict:
        """Each part's share of the step's CPU time (embedding, per-block forward and backward, rest)."""
        tot = max(self.total, 1e-12)
        rest = max(self.total - self.embed - sum(self.fwd) - sum(self.bwd), 0.0)
        return {"embed": self.embed / tot, "fwd": [x / tot for x in self.fwd], "bwd": [x / tot for x in self.bwd],
                "rest": rest / tot}


# An emulated device computes in short bursts between sleeps and link waits, and a burst after an idle
# gap costs more CPU than the same step in a tight loop (cold caches; +5-25% on this host). The
# calibration measures that ratio so that the host's FLOP/s are those of a burst, the regime every
# rank of a run computes in.
IDLE_GAP_S = 0.3
IDLE_REPS = 5


def idle_factor(fn, warm: list[float] | None = None) -> float:
    """Median CPU of `fn` after an idle gap / median CPU of `fn` back to back (>= 1).

    `warm`: back-to-back CPU times of `fn` already measured (the calibration's own steps), so that
    only the runs after an idle gap are new.
    """
    warm = list(warm) if warm and len(warm) >= 2 else [_cpu_of(fn, 1) for _ in range(IDLE_REPS)]
    cold = []
    for _ in range(IDLE_REPS):
        time.sleep(IDLE_GAP_S)
        cold.append(_cpu_of(fn, 1))
    warm.sort()
    cold.sort()
    return max(cold[len(cold) // 2] / max(warm[len(warm) // 2], 1e-9), 1.0)


def _train(model, loss_fn, batch, after_backward=None) -> None:
    loss_fn(model, batch).backward()
    if after_backward:
        after_backward()
    model.zero_grad(set_to_none=True)


def _rows(batch: dict, n: int) -> dict:
    return {k: (v[:n] if torch.is_tensor(v) or isinstance(v, list) else v) for k, v in batch.items()}


# Row counts at which the cached step is timed: every count up to DENSE_ROWS (where the cost is least
# linear, see measure()), then about 1.5x apart up to the batch's rows, linear in between. Timing all 32
# counts of a 32-row batch took 45 s of `make run`'s 86 s calibration; these 12 take about 10 s.
DENSE_ROWS = 8


def measured_row_counts(most: int) -> list[int]:
    """1 .. DENSE_ROWS, then ~1.5x steps, always ending at `most`."""
    counts = list(range(1, min(most, DENSE_ROWS) + 1))
    while counts[-1] < most:
        counts.append(min(most, max(counts[-1] + 1, round(counts[-1] * 1.5))))
    return counts


def fill_between(counts: list[int], values: list[float]) -> list[float]:
    """The value at every row count 1 .. counts[-1], linear between the measured ones."""
    out = []
    for lo, hi, a, b in zip(counts, counts[1:], values, values[1:]):
        out += [a + (b - a) * (r - lo) / (hi - lo) for r in range(lo, hi)]
    return out + [values[-1]]


def measure(bench: Bench, flops_fn, repeats: int = 2) -> dict:
    """The measurements themselves (one thread): see the module doc."""
    model, loss_fn = bench.model, bench.loss_fn
    c0 = time.process_time()
    _train(model, loss_fn, bench.batches[0])  # warm-up
    first = time.process_time() - c0
    parts = PartClock(bench.embed, bench.blocks) if bench.blocks else None
    cpu, flops, wall0, first_batch = 0.0, 0.0, time.perf_counter(), []
    for _ in range(repeats):
        for i, b in enumerate(bench.batches):
            c = _cpu_of(lambda: _train(model, loss_fn, b, parts and parts.step_done), 1)
            cpu += c
            flops += flops_fn(b)
            if i == 0:
                first_batch.append(c)
    n = repeats * len(bench.batches)
    if parts:
        parts.total = cpu
        parts.remove()
    factor = idle_factor(lambda: _train(model, loss_fn, bench.batches[0]), warm=first_batch)
    host_flops = flops / cpu / factor  # FLOP/s of a burst after idling (see IDLE_GAP_S)
    out = {"host_flops": host_flops, "step_cpu_s": cpu / n, "step_wall_s": (time.perf_counter() - wall0) / n,
           "step_flops": flops / n, "rows": int(bench.batches[0]["input_ids"].shape[0]),
           "seq_len": sum(int(b["input_ids"].shape[1]) for b in bench.batches) / len(bench.batches),
           "first_step_cpu_s": first, "idle_factor": factor, "warm_host_flops": flops / cpu}
    if parts:
        out["parts"] = parts.fractions()
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
        counts, timed = measured_row_counts(most), []
        for r in counts:
            sub = [_rows(cb, r) for cb in cbs if int(cb["input_ids"].shape[0]) >= r]
            timed.append(_cpu_of(lambda: [_train(model, loss_fn, cb) for cb in sub], repeats) / len(sub))
        by_rows = fill_between(counts, timed)
        # the cached step's own cold/warm ratio: its CPU as a burst after idling, priced at host_flops
        cached_factor = idle_factor(lambda: _train(model, loss_fn, cbs[0]))
        by_rows = [c * cached_factor for c in by_rows]
        one, whole = by_rows[0], by_rows[-1]
        per = max(whole - one, 0.0) / max(most - 1, 1)  # the line through (1, one) and (rows, whole)
        out.update(cached_step_cpu_s=whole, cached_one_row_cpu_s=one, cached_rows=most, cached_rows_timed=counts,
                   cached_rows_cpu_s=by_rows, cached_idle_factor=cached_factor,
                   cached_rows_flops=[c * host_flops for c in by_rows],
                   cached_step_flops=per * host_flops, cached_call_flops=max(one - per, 0.0) * host_flops)
    return out


def calibrate(bench_build: Callable[[], Bench], key: dict, flops_fn, repeats: int = 2,
              use_cache: bool = True) -> dict:
    """bench_build() -> Bench; flops_fn(batch) -> the cost model's FLOPs of one step on that batch."""
    key = {**key, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "version": VERSION}
    tag = json.dumps(key, sort_keys=True)
    f = _cache_file()
    known = json.loads(f.read_text()) if f.is_file() else {}
    if use_cache and tag in known and time.time() - known[tag].get("measured_at", 0) < MAX_AGE_S:
        return {**known[tag], "cached": True}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {**measure(bench_build(), flops_fn, repeats), "key": key, "measured_at": time.time()}
    finally:
        torch.set_num_threads(threads)
    known[tag] = out
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(known, indent=2))
    return {**out, "cached": False}
