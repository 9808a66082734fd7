"""A runtime strategy is a `Strategy`: hooks that say how this rank computes and communicates. The loop
around them is the one driver (edgeft.train.driver) the single-device Trainer uses too; `RuntimeLoop`
adds what every rank of a distributed run does around each step: heartbeats, fault injection, step
timing split into compute/communication, sharded checkpoints, and resuming from the last complete one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edgeft.runtime import faults
from edgeft.runtime.strategies import common as C
from edgeft.train.driver import drive


@dataclass
class LoopResult:
    losses: list = field(default_factory=list)  # (global_step, loss) known on this rank
    step_times_s: list = field(default_factory=list)
    # per step: [emulated compute, host CPU of that compute, communication (link waits included), the rest]
    step_parts_s: list = field(default_factory=list)
    epoch_times_s: list = field(default_factory=list)
    epochs_done: list = field(default_factory=list)
    global_step: int = 0
    evals: list = field(default_factory=list)
    fill_s: float | None = None  # PAC tap_norm=channel: the forward-only pipeline pass that filled the cache


class Strategy:
    """One rank's part of a strategy. `setup` builds the model and sets what the loop needs:

    - `named`: the parameters this rank checkpoints (and restores on resume), `shard`: its shard's name
      (None: it writes none), `opt`/`sched`: its optimizer and schedule (None when it steps nothing).

    - `before`: on the rank that evaluates, the dev metrics before training (C.evaluate_before); None elsewhere.

    The loop then calls `epoch_start`, `step` per batch and `epoch_end`, and `finish` builds the result.
    Its name and planners are registered in edgeft.planner.strategies; `make_plan`/`repredict` are the
    launcher's side of it.
    """

    before: dict | None = None

    @staticmethod
    def make_plan(cluster, table, samples: int, steps: int, micro_batches: int | None, cut: int | None):
        """The launcher's RuntimePlan for this strategy (edgeft.runtime.placement)."""
        raise NotImplementedError

    @staticmethod
    def repredict(plan, cluster, table, steps: int) -> dict | None:
        """The plan's placement re-timed on another cluster; None: the same as planned."""
        return None

    @classmethod
    def device_rows(cls, cfg, cluster, table, samples: int, steps: int) -> tuple[int, int | None]:
        """(rows one device computes at a time, rows of its PAC cached step or None) under launch config
        `cfg`, for calibrating the cost table before planning: the whole batch here."""
        return cfg.train.batch_size, None

    @staticmethod
    def explain_idle(plan, cluster, table) -> dict[str, str] | None:
        """Why each device of `cluster` the launcher's plan leaves out gets no work; None: none is left out."""
        return None

    def __init__(self, ctx: C.Context):
        self.ctx = ctx
        self.named: dict = {}
        self.shard: str | None = None
        self.opt = self.sched = None

    def setup(self) -> None:
        raise NotImplementedError

    def epoch_start(self, epoch: int, first_batch: int) -> None:
        """Before the epoch's first step (first_batch > 0: resuming part-way)."""

    def step(self, epoch: int, indices: list[int], global_step: int) -> float | None:
        """One optimizer step on these samples; the loss on the rank that sees it, else None."""
        raise NotImplementedError

    def epoch_end(self, epoch: int) -> dict | None:
        """After the epoch (all ranks in step): dev metrics on the rank that evaluates, else None."""
        return None

    def finish(self, res: LoopResult) -> dict:
        """This rank's result: its role and whatever the strategy reports, with the loop's under 'loop'."""
        return {"loop": res}


class RuntimeLoop:
    """The driver's hooks for one rank of a distributed run, around a Strategy's."""

    def __init__(self, ctx: C.Context, strategy: Strategy):
        self.ctx, self.s, self.res = ctx, strategy, LoopResult()

    def start(self) -> tuple[int, int]:
        ctx, s, res = self.ctx, self.s, self.res
        epoch0, step0, res.global_step = C.maybe_resume(ctx, s.named, s.opt, s.sched)
        res.losses = [tuple(x) for x in C.previous_losses(ctx)]
        if s.before is not None:  # the evaluating rank reports the epochs trained before the stop too
            res.evals = [e for e in C.previous_evals(ctx) if e["epoch"] > 0]
        return epoch0, step0

    def epoch_start(self, epoch: int, first_batch: int) -> None:
        with self.ctx.precision.autocast():  # PAC's cache fill, where a strategy runs one here
            self.s.epoch_start(epoch, first_batch)
        self.ctx.comm.barrier()
        self._t_epoch = time.perf_counter()

    def step(self, epoch: int, b: int, indices: list[int], last_of_epoch: bool) -> None:
        ctx, s, res = self.ctx, self.s, self.res
        ctx.beat.update(step=res.global_step, epoch=epoch, phase="train", units=ctx.done_before_steps + res.global_step)
        faults.maybe_inject_fault(res.global_step)
        t0 = time.perf_counter()
        c0, h0, m0 = ctx.emu.compute_s, ctx.emu.host_cpu_s, ctx.comm.ledger.comm_s
        with ctx.precision.autocast():  # every strategy's forwards in the run's precision (fp32: nothing)
            loss = s.step(epoch, indices, res.global_step)
        if s.sched is not None:
            s.sched.step()
        res.global_step += 1
        res.step_times_s.append(time.perf_counter() - t0)
        parts = [ctx.emu.compute_s - c0, ctx.emu.host_cpu_s - h0, ctx.comm.ledger.comm_s - m0]
        res.step_parts_s.append([round(x, 5) for x in parts + [res.step_times_s[-1] - parts[0] - parts[2]]])
        if loss is not None:
            res.losses.append((res.global_step, float(loss)))
            ctx.log("train_loss", step=res.global_step, epoch=epoch, loss=float(loss), seconds=res.step_times_s[-1])
        if res.global_step % ctx.spec.train.checkpoint_every == 0 and not last_of_epoch:
            self._checkpoint(epoch, b + 1)

    def epoch_end(self, epoch: int, first_batch: int, n_batches: int) -> None:
        ctx, res = self.ctx, self.res
        ctx.comm.flush()
        ctx.comm.barrier()
        res.epoch_times_s.append(time.perf_counter() - self._t_epoch)
        res.epochs_done.append(epoch)
        ctx.log("epoch_end", epoch=epoch + 1, seconds=res.epoch_times_s[-1], steps=n_batches - first_batch,
                partial=first_batch > 0)
        metrics = self.s.epoch_end(epoch)
        C.wait_for_evaluation(ctx)  # one rank evaluated while the others waited
        if metrics is not None:
            res.evals.append({"epoch": epoch + 1, **metrics})
        self._checkpoint(epoch + 1, 0)

    def _checkpoint(self, epoch: int, step_in_epoch: int) -> None:
        s, res = self.s, self.res
        evals = None if s.before is None else [{"epoch": 0, **s.before}] + res.evals
        C.save_checkpoint(self.ctx, s.shard, s.named, s.opt, epoch, step_in_epoch, res.global_step,
                          [list(x) for x in res.losses], evals)


def run(ctx: C.Context, strategy: type[Strategy]) -> dict:
    """Set the strategy up on this rank, train (resuming when the spec says so), return its result."""
    s = strategy(ctx)
    s.setup()
    cfg = ctx.spec.train
    loop = RuntimeLoop(ctx, s)
    drive(loop, len(ctx.train_feats), cfg.batch_size, cfg.seed, cfg.epochs, cfg.max_steps_per_epoch)
    ctx.emu.check_memory("end of training")
    if s.before is not None:
        loop.res.evals.insert(0, {"epoch": 0, **s.before})
    return s.finish(loop.res)
