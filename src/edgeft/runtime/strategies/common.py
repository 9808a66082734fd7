"""What every strategy needs: the task and model as the single-device recipe builds them, the
optimizer/schedule the Trainer builds (edgeft.train.optim, so runs are comparable to it), the run's
precision (edgeft.train.precision: the loop runs each step under its autocast; `backward` scales an fp16
loss and `clip_global` unscales, clips and says whether the ranks step), micro-batch slicing, loss weights,
global gradient clipping, and checkpoints. The loop itself is loop.py's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from edgeft.runtime import checkpoint as ckpt
from edgeft.runtime.comm import Comm
from edgeft.runtime.emulation import DeviceEmulator
from edgeft.runtime.faults import Heartbeat
from edgeft.runtime.group import WAIT_GROUP_TIMEOUT_S, Group
from edgeft.runtime.spec import GRAD_SYNC_DTYPES, RunSpec
from edgeft.train.optim import build_optimizer
from edgeft.train.precision import Precision


@dataclass
class Context:
    spec: RunSpec
    group: Group
    comm: Comm
    emu: DeviceEmulator
    beat: Heartbeat
    log: callable  # log(event, **fields) into this rank's events file
    task: object = None
    backbone: object = None
    featurizer: object = None
    method: object = None
    model: object = None
    train_feats: list = field(default_factory=list)
    dev_feats: list = field(default_factory=list)
    done_before_steps: int = 0  # units of work reported before the first step (hybrid PAC's fill batches)
    _precision: Precision | None = None

    @property
    def precision(self) -> Precision:
        """The run's precision on this rank (fp16 with a loss scale every rank agrees on)."""
        if self._precision is None:
            self._precision = Precision(self.spec.train.precision, self.group.device, agreed=True)
        return self._precision

    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def name(self) -> str:
        return self.spec.ranks[self.rank].name

    @property
    def ckpt_root(self) -> Path:
        return Path(self.spec.run_dir) / "checkpoint"


def build(ctx: Context, prepare: bool = True) -> None:
    """Task, backbone, featurizer and method exactly as `edgeft finetune` builds them (train.setup)."""
    from edgeft.train.setup import start_session

    spec = ctx.spec
    session = start_session(spec.model, spec.task, spec.method, spec.method_options, spec.head, spec.train.seed)
    ctx.task, ctx.backbone, ctx.featurizer, ctx.method = session.task, session.backbone, session.featurizer, \
        session.method
    ctx.method.run_blockwise(spec.strategy)  # before prepare: PAC's side_init=auto resolves by it
    ctx.method.run_as(ctx.name)  # before prepare: PAC's disk cache gets a folder per device
    ctx.train_feats = ctx.featurizer.encode(ctx.task.train)
    if prepare:
        ctx.model = session.prepare().to(ctx.group.device)
        ctx.model.train()


# -- batches ----------------------------------------------------------------------------------------
def steps_per_epoch(ctx: Context) -> int:
    n = math.ceil(len(ctx.train_feats) / ctx.spec.train.batch_size)
    return min(n, ctx.spec.train.max_steps_per_epoch or n)


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def slice_rows(batch: dict, lo: int, hi: int) -> dict:
    """Rows lo..hi of a collated batch (collated once, so padding and positions match the full batch)."""
    return {k: (v[lo:hi] if torch.is_tensor(v) or isinstance(v, list) else v) for k, v in batch.items()}


def split_rows(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal row ranges (some may be empty when parts > n)."""
    sizes = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


def loss_units(batch: dict, objective: str) -> int:
    """What the objective averages over: samples, or target tokens for the LM objective."""
    if objective == "lm":
        return int((batch["labels"][:, 1:] != -100).sum())
    return len(batch["label"])


# -- model pieces -----------------------------------------------------------------------------------
class HiddenModel:
    """Model-like callable for objective.forward: runs blocks[start:] + final on received hidden states (an LM
    head's logits for the label words only when the objective asks, `vocab_ids`)."""

    accepts_sample_ids = False
    accepts_vocab_ids = True

    def __init__(self, view, start: int, hidden: torch.Tensor):
        self.view, self.start, self.hidden = view, start, hidden

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, logits_to_keep=None, vocab_ids=None,
                 **_):
        h = self.view.run_blocks(self.hidden, self.start, self.view.num_blocks, attention_mask)
        if logits_to_keep and not self.view.is_classifier:  # a per-token head: only the positions kept
            h = h[:, -int(logits_to_keep):]
        return SimpleNamespace(logits=self.view.final(h, attention_mask, vocab_ids=vocab_ids))


def block_param_names(model, view, start: int, end: int, trainable_only: bool = True) -> list[str]:
    """Names (as model.named_parameters() spells them) of the parameters inside blocks[start:end]."""
    wanted = {id(p) for b in view.blocks[start:end] for p in b.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in wanted and (p.requires_grad or not trainable_only)]


def outside_block_names(model, view) -> list[str]:
    """Trainable parameters outside every block (a task head, a prompt, embeddings under full)."""
    inside = {id(p) for b in view.blocks for p in b.parameters()}
    return [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in inside]


# -- optimizer ----------------------------------------------------------------------------------------
def make_optimizer(ctx: Context, params: list[torch.nn.Parameter], total_steps: int):
    """AdamW + schedule exactly as Trainer builds them (None when nothing trains here)."""
    cfg = ctx.spec.train
    return build_optimizer(params, cfg, cfg.lr or ctx.method.lr_for(ctx.model), total_steps)


def backward(ctx: Context, loss: torch.Tensor) -> None:
    """The backward of a rank's loss (scaled up under fp16; every gradient sent on carries the same scale)."""
    if ctx.precision.scales_loss:
        loss = loss * ctx.precision.scale(1.0)
    loss.backward()


def sync_gradients(ctx: Context, grads: list[torch.Tensor], ranks: list[int], pg=None,
                   exact: list[torch.Tensor] = ()) -> None:
    """Sum the replicas' gradients over `ranks` in the run's grad_sync dtype (a loss in `exact` stays fp32)."""
    ctx.comm.all_reduce_(grads, ranks, pg, wire=GRAD_SYNC_DTYPES[ctx.spec.train.grad_sync], exact=exact)


def clip_global(ctx: Context, params: list[torch.nn.Parameter], ranks: list[int], pg=None,
                share: float = 1.0) -> bool:
    """Clip by the norm over all parameters spread across `ranks`. Each rank holds a disjoint part, or
    a replica: then `share` = 1/replicas so the replicas' copies count once. Under fp16 the gradients are
    unscaled first, and the answer says whether to step: False when they overflowed on any of `ranks`
    (all of them read the same all-reduced norm, so all skip together)."""
    max_norm = ctx.spec.train.max_grad_norm
    prec = ctx.precision
    if not max_norm and not prec.scales_loss:
        return True
    grads = [p.grad for p in params if p.grad is not None]
    prec.unscale_agreed(grads)
    sq = torch.zeros(1, dtype=torch.float64, device=ctx.group.device)
    for g in grads:
        sq += g.detach().double().pow(2).sum()
    sq *= share
    ctx.comm.all_reduce_([sq], ranks, pg)
    total = float(sq.sqrt())
    if not prec.agree(total):
        return False
    coef = max_norm / (total + 1e-6) if max_norm else 1.0
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return True


def restore_lr(opt, sched, global_step: int) -> None:
    """Put a fresh LambdaLR schedule at `global_step` (a pure function of the step: nothing to save)."""
    if sched is None:
        return
    sched.last_epoch = global_step
    for group, base, lam in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * lam(global_step)
    sched._last_lr = [g["lr"] for g in opt.param_groups]


# -- checkpoints ------------------------------------------------------------------------------------
def maybe_resume(ctx: Context, named: dict, opt, sched) -> tuple[int, int, int]:
    """(epoch, step_in_epoch, global_step) to continue from; zeros without a checkpoint."""
    if not ctx.spec.resume:
        return 0, 0, 0
    found = ckpt.latest(ctx.ckpt_root)
    if not found:
        return 0, 0, 0
    path, meta = found
    if named:
        ckpt.load_into(path, named, opt)
    restore_lr(opt, sched, meta["global_step"])
    ctx.log("resumed", checkpoint=str(path), epoch=meta["epoch"], step_in_epoch=meta["step_in_epoch"],
            global_step=meta["global_step"])
    return meta["epoch"], meta["step_in_epoch"], meta["global_step"]


def save_checkpoint(ctx: Context, shard: str | None, named: dict, opt, epoch: int, step_in_epoch: int,
                    global_step: int, losses: list[float], evals: list[dict] | None = None) -> None:
    """Every rank writes its shard (shard=None: nothing to write) and the evaluating one its dev metrics so far
    (`evals`), barrier, root commits. The barrier waits as the waits for an evaluation do (EVAL_WAIT_S), not for
    the group's step-sized timeout: the ranks with little or nothing to write wait there for the one writing the
    largest shard, and a shard written more slowly than one step (a loaded host's busy disk) made them exit as
    bystanders, so the launcher dropped a healthy device and re-planned. A rank lost meanwhile is still found by
    the launcher (its exit or its stale heartbeat)."""
    t0 = time.perf_counter()
    if shard is not None:
        ckpt.save_shard(ctx.ckpt_root, global_step, shard, named, opt, named)
    if evals is not None:
        ckpt.save_evals(ctx.ckpt_root, global_step, evals)
    ctx.comm.flush()
    ctx.comm.barrier(timeout_s=EVAL_WAIT_S)
    if ctx.group.is_root:
        ckpt.commit(ctx.ckpt_root, global_step, {
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
            "world": ctx.group.world,
            "ranks": [r.name for r in ctx.spec.ranks], "attempt": ctx.spec.attempt, "losses": losses})
    ctx.log("checkpoint", global_step=global_step, seconds=time.perf_counter() - t0)


def previous_losses(ctx: Context) -> list[float]:
    found = ckpt.latest(ctx.ckpt_root) if ctx.spec.resume else None
    return list(found[1].get("losses", [])) if found else []


def previous_evals(ctx: Context) -> list[dict]:
    """The dev metrics (epoch 0 = before training) of the checkpoint a resumed attempt continues from."""
    found = ckpt.latest(ctx.ckpt_root) if ctx.spec.resume else None
    return ckpt.read_evals(found[0]) if found else []


def evaluate_before(ctx: Context, model) -> dict:
    """The dev metrics before training, on the rank that evaluates. An attempt that resumes (--resume, or after a
    lost device) takes them from its checkpoint: the untrained model is the same, and measuring it again delayed
    every rank's recovery by a whole evaluation."""
    earlier = [e for e in previous_evals(ctx) if e["epoch"] == 0]
    if earlier:
        ctx.log("evaluated", examples=0, reused="checkpoint", seconds=0.0)
        return {k: v for k, v in earlier[0].items() if k != "epoch"}
    return evaluate_full(ctx, model)


def save_adapter(ctx: Context, model) -> None:
    """The trained result as `edgeft finetune` writes it (run_dir/adapter), from the rank that holds every
    trainable after the last epoch, so that eval, generate, chat, export and compress take a collaborative run's
    result as they take a finetune's."""
    from edgeft.methods.base import save_adapter as save

    out = save(Path(ctx.spec.run_dir) / "adapter", ctx.method, model, ctx.backbone, ctx.task,
               {"max_length": ctx.featurizer.max_length, "strategy": ctx.spec.strategy})
    ctx.log("adapter_saved", path=str(out))


# How long the other ranks wait for one that evaluates (a report between steps, on the whole dev set): the process
# group's timeout is sized for steps (60 s without a prediction), and 500 long SST-2 rows took 53 s on SmolLM2. A rank
# lost meanwhile is still found by the launcher (its exit or its stale heartbeat).
EVAL_WAIT_S = WAIT_GROUP_TIMEOUT_S


def wait_for_evaluation(ctx: Context) -> None:
    """Every rank meets after one of them evaluated (evaluate_full), waiting up to EVAL_WAIT_S, not a step's
    timeout; nothing to wait for when the run does not evaluate."""
    if ctx.spec.evaluate:
        ctx.comm.barrier(timeout_s=EVAL_WAIT_S)


def eval_rows(task, dev_samples_eval: int | None) -> list[dict]:
    """The dev rows a run evaluates on: the first `dev_samples_eval` of the task's, all of them when None. The
    launcher counts those --max-length shortens (run._workload) before the workers encode them."""
    return task.dev[:dev_samples_eval] if dev_samples_eval else task.dev


def evaluate_full(ctx: Context, model) -> dict:
    """Dev metrics of the assembled model (on the rank that holds it).

    The evaluation is a report, not part of the emulated plan (no compute section stretches it), and the other
    ranks wait for it, so it runs on every core this process may use rather than the rank's own thread count
    (make run's evaluation before training, 200 sentences through SmolLM2, took 35 s on one thread)."""
    from edgeft.cores import usable_cores
    from edgeft.data.tasks import default_lengths
    from edgeft.train.evaluate import evaluate

    if not ctx.dev_feats:
        ctx.dev_feats = ctx.featurizer.encode(eval_rows(ctx.task, ctx.spec.dev_samples_eval))
    threads, t0 = torch.get_num_threads(), time.perf_counter()
    torch.set_num_threads(max(threads, usable_cores()))
    try:
        metrics = evaluate(model, ctx.task, ctx.featurizer, ctx.dev_feats, ctx.spec.train.eval_batch_size,
                           ctx.group.device, ctx.spec.train.max_new_tokens or default_lengths(ctx.task.name)[1])
    finally:
        ctx.log("evaluated", examples=len(ctx.dev_feats), threads=torch.get_num_threads(),
                seconds=time.perf_counter() - t0)
        torch.set_num_threads(threads)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def check_blockwise_method(ctx: Context) -> None:
    from edgeft.methods.base import check_strategy

    check_strategy(ctx.spec.method, ctx.spec.strategy)
