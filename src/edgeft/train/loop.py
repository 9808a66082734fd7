"""The lean single-device training loop: optimizer, schedule, accumulation, eval, checkpoint/resume."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from edgeft.config import SEED_MAX
from edgeft.errors import CacheError, ConfigError
from edgeft.processes import Interrupted
from edgeft.train.compiled import CompileMode, compiled_forward
from edgeft.train import recompute
from edgeft.train.determinism import deterministic_kernels
from edgeft.train.driver import drive
from edgeft.train.meters import PeakMemory, Timer
from edgeft.train.optim import build_optimizer
from edgeft.train.precision import Precision, PrecisionName



class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    lr: Optional[float] = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    scheduler: Literal["linear", "constant", "cosine"] = "linear"
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: Optional[float] = 1.0
    checkpoint_steps: int = Field(0, ge=0, description="0: checkpoint at the end of each epoch only")
    log_every: int = Field(10, ge=1)
    max_new_tokens: Optional[int] = Field(None, ge=1, description="tokens generated to score each dev answer of a "
                                          "generation task (default: the task's own: 256 for GSM8K, 64 for others)")
    device: str = "auto"
    precision: PrecisionName = Field("auto", description="fp32 | tf32 | bf16 | fp16 | auto (fp32 for now: "
                                                          "see edgeft.train.precision)")
    compile: CompileMode = Field("off", description="off | default | reduce-overhead: torch.compile the model's "
                                                     "forward for the backprop methods, batches padded to length "
                                                     "buckets (edgeft.train.compiled)")
    compile_bucket: int = Field(16, ge=1, description="with compile: batches are padded to a multiple of this many "
                                                       "tokens (>= max_length: one width, one graph)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="the run's random seed (numpy takes 0 to 2**32-1)")
    grad_checkpoint: bool = Field(False, description="recompute each block's activations in the backward instead of "
                                                     "keeping them (full, lora, prompt, bitfit): far less memory for "
                                                     "about one more forward (edgeft.train.recompute)")
    deterministic: bool = Field(False, description="torch's deterministic kernels for the run: no float atomics "
                                                   "whose order the GPU decides (edgeft.train.determinism says what "
                                                   "it does not cover); slower where a kernel has to change")


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when there is one, else CPU) or a torch device name, checked here: torch's own refusal comes
    later, from deep inside the first `.to()`, as an AssertionError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device '{name}': not a torch device name ({err}); use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}': this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu, or "
                          "auto (CUDA when there is one)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}': there are {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{name}': MPS is not available here; use --device cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    epoch_times_s: list[float] = field(default_factory=list)
    step_times_s: list[float] = field(default_factory=list)  # host time per step (on CUDA the GPU runs behind)
    losses: list[float] = field(default_factory=list)
    eval_history: list[dict] = field(default_factory=list)
    peak_memory_mb: float = 0.0
    memory_kind: str = ""
    steps: int = 0
    resumed_from: Optional[dict] = None
    compile: Optional[dict] = None  # what compiling cost (edgeft.train.compiled); None when compile is off


def _numpy_rng_state() -> tuple:
    """numpy's RNG state with its key array as a tensor, so weights_only loading accepts it."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached


def _numpy_rng_from(saved) -> tuple:
    kind, keys, pos, has_gauss, cached = saved
    keys = keys.numpy() if torch.is_tensor(keys) else keys  # older state.pt files hold the numpy array
    return kind, keys.astype(np.uint32), pos, has_gauss, cached


def _cuda_rng_states() -> list[torch.Tensor] | None:
    """Every GPU's RNG state (dropout on CUDA draws from it, not from the CPU generator); None where this process
    never initialised CUDA, so its generators were never used (and asking would start a CUDA context)."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def _restore_cuda_rng_states(states: list[torch.Tensor] | None) -> None:
    """Put back the saved GPU RNG states, for as many GPUs as both runs have (a CPU resume ignores them)."""
    if not states or not torch.cuda.is_available():
        return
    for i, st in enumerate(states[:torch.cuda.device_count()]):
        torch.cuda.set_rng_state(st, i)


# rebuilding a plain numpy array runs no code: what earlier state.pt files need under weights_only
_NUMPY_ARRAYS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


def _state_of_trainables(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Trainer:
    """Runs a Method over featurised data on one device: the hooks the loop driver (edgeft.train.driver)
    calls. `evaluate_fn(model) -> metrics` is called after each epoch."""

    compile_backend = "inductor"  # torch.compile's backend when cfg.compile is on (tests: "aot_eager")

    def __init__(self, model, method, featurizer, train_feats: list[dict], cfg: TrainConfig,
                 loss_fn: Callable, evaluate_fn: Callable | None = None, run=None, progress=None):
        self.model, self.method, self.featurizer = model, method, featurizer
        self.train_feats, self.cfg, self.loss_fn, self.evaluate_fn = train_feats, cfg, loss_fn, evaluate_fn
        self.run, self.progress = run, progress
        self.device = resolve_device(cfg.device)
        self.timer = Timer(self.device)
        self.precision = Precision(cfg.precision, self.device)
        self._loss_fn = self.precision.wrap(loss_fn)  # the forward under autocast (loss_fn itself under fp32)
        lr = cfg.lr or method.lr_for(model)
        self.lr = lr
        self.params = method.trainable_parameters(model)
        recompute.apply(model, cfg.grad_checkpoint)
        self.frozen_cast = self.precision.cast_frozen(model)  # after the method marked what it trains (CUDA bf16/fp16)
        # the training step's compiled forward (evaluation stays eager); None under compile 'off'
        self.compiled = compiled_forward(model, method, cfg, self.device, featurizer, self.compile_backend)
        self.steps_per_epoch = math.ceil(len(train_feats) / cfg.batch_size / cfg.grad_accum)
        self.optimizer, self.scheduler = build_optimizer(self.params if method.uses_optimizer else [], cfg, lr,
                                                         self.steps_per_epoch * cfg.epochs)
        # a method may replay a whole step (forward, loss, backward, clipping) as one CUDA graph: only where the
        # step is exactly that (no loss scaling, autocast or accumulation; the optimizer steps eagerly after it)
        self.graph_steps = (self.device.type == "cuda" and self.optimizer is not None and cfg.grad_accum == 1
                            and self.precision.dtype is None and self.compiled is None)
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self._stop_signum: int | None = None
        self._result, self._pending = None, []
        self.checkpoint_step: int | None = None  # the global step the last checkpoint saved or loaded holds
        self._resuming = False  # until the first epoch of a run resumed from a checkpoint has started
        # the dev metrics before training (the recipe measures them): kept in the checkpoint with the epochs' so a
        # resumed run reports the whole history, not only the epochs after the stop
        self.before: dict | None = None

    # -- stopping at a safe point ----------------------------------------------------------------------
    def request_stop(self, signum: int) -> None:
        """Stop once the step under way has updated the weights, and checkpoint there (a stop signal's first
        arrival, processes.stop_on_signals' wind_down): Ctrl-C keeps the work up to that step, not to the last
        epoch's end, and `--resume` goes on from it."""
        self._stop_signum = signum

    def losses_so_far(self) -> list[float]:
        """Every step's loss of this fit (of its resumed part), read from the device (a stopped run reports them)."""
        if self._result is None:
            return []
        self._flush_losses()
        return list(self._result.losses)

    def _stop_if_asked(self) -> None:
        if self._stop_signum is None:
            return
        self._flush_losses()
        if self.run and self.checkpoint_step != self.global_step:  # (an epoch's end has just written this step's)
            self.save_checkpoint(self.run.checkpoint_dir)
        raise Interrupted(self._stop_signum)

    # -- checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "trainables": _state_of_trainables(self.model),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "loss_scale": self.precision.state_dict(),
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "global_step": self.global_step,
            "evals": {"before": self.before and _scalars(self.before),
                      "history": [_scalars(e) for e in (self._result.eval_history if self._result else [])]},
            "method_state": {k: v.detach().cpu().clone() for k, v in self.method.checkpoint_state(self.model).items()},
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _numpy_rng_state(),
                    "cuda": _cuda_rng_states()},
        }
        tmp = path / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(path / "state.pt")  # never leave a half-written checkpoint behind
        self.checkpoint_step = self.global_step

    def load_checkpoint(self, path: Path) -> dict:
        file = path / "state.pt"
        try:
            # tensors and plain containers only: a run directory from elsewhere cannot run code on load
            with torch.serialization.safe_globals(_NUMPY_ARRAYS):  # checkpoints written before the change
                state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file, or one holding other objects than tensors
            raise CacheError(f"{file}: checkpoint cannot be read safely ({str(err).splitlines()[0][:300]}). "
                             "Delete it to start over.") from err
        named = dict(self.model.named_parameters())
        missing = [n for n in state["trainables"] if n not in named]
        if missing:
            raise CacheError(f"{file}: checkpoint does not match this model/method (e.g. '{missing[0]}').")
        with torch.no_grad():
            for n, t in state["trainables"].items():
                named[n].copy_(t)
        self.method.load_checkpoint_state(self.model, state.get("method_state") or {})  # absent before this was kept
        if self.optimizer and state["optimizer"]:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state.get("loss_scale"))
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(_numpy_rng_from(state["rng"]["numpy"]))
        _restore_cuda_rng_states(state["rng"].get("cuda"))  # None: saved by a CPU run, or before this was kept
        self.epoch, self.batch_in_epoch, self.global_step = state["epoch"], state["batch_in_epoch"], state["global_step"]
        evals = state.get("evals") or {}  # absent in checkpoints written before the history was kept
        self.before = evals.get("before") or self.before
        if self._result is not None:
            self._result.eval_history = list(evals.get("history") or [])
        self.checkpoint_step = self.global_step
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "global_step": self.global_step}

    # -- the loop --------------------------------------------------------------------------------------
    def _to(self, batch: dict) -> dict:
        """The batch on the device. On CUDA through pinned memory and without blocking: a copy from pageable
        memory waits for the GPU to drain its queue first, which would stall every step."""
        if self.device.type != "cuda":
            return {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        return {k: (v.pin_memory().to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
                for k, v in batch.items()}

    def _flush_losses(self) -> None:
        """The steps' losses as floats, read from the device in one transfer (a read per step is a sync per
        step: the CPU could not queue the next step while the GPU runs this one)."""
        pending, self._pending = self._pending, []
        tensors = [x for x in pending if torch.is_tensor(x)]
        values = iter(torch.stack([t.float().reshape(()) for t in tensors]).tolist()) if tensors else iter(())
        self._result.losses.extend(next(values) if torch.is_tensor(x) else float(x) for x in pending)

    @property
    def _last_loss(self) -> float:
        """The latest loss read from the device (nan before the first read)."""
        return self._result.losses[-1] if self._result.losses else float("nan")

    def fit(self, resume_from: Path | None = None) -> TrainResult:
        self._result, self._resume_from = TrainResult(), resume_from
        with deterministic_kernels(self.cfg.deterministic):
            drive(self, len(self.train_feats), self.cfg.batch_size, self.cfg.seed, self.cfg.epochs)
        self._flush_losses()  # a run stopped inside an epoch still reports every step's loss
        result = self._result
        result.peak_memory_mb, result.memory_kind = self._memory.peak_mb(), self._memory.kind
        result.steps = self.global_step
        result.compile = self.compiled.report() if self.compiled else None
        return result

    # -- the driver's hooks (edgeft.train.driver) ------------------------------------------------------
    def start(self) -> tuple[int, int]:
        if self._resume_from is not None and (self._resume_from / "state.pt").is_file():
            self._result.resumed_from = self.load_checkpoint(self._resume_from)
            self._resuming = True
            if self.run:
                self.run.event("resume", **self._result.resumed_from)
            done = self.epoch * math.ceil(len(self.train_feats) / self.cfg.batch_size) + self.batch_in_epoch
            if self.progress and done:  # the bar counts every batch of the run: those before the checkpoint are done
                self.progress(None, steps=done)
        self._memory = PeakMemory(self.device).start()
        self._pending = []
        self.model.train()
        return self.epoch, self.batch_in_epoch

    def epoch_start(self, epoch: int, first_batch: int) -> None:
        self._t_epoch = self.timer.now()
        if first_batch == 0 or self._resuming:
            with self.precision.autocast():  # PAC's streamed cache fill runs here
                self.method.on_epoch_start(self.model, epoch, self.train_feats, self.featurizer.collate,
                                           resumed=self._resuming)
        self._resuming = False

    def _group_size(self, b: int) -> int:
        """Batches in batch b's accumulation group: an epoch's last group may be short, and divided by grad_accum
        its mean gradient came out that much smaller (clipping and the update saw a scaled-down gradient)."""
        n_batches = math.ceil(len(self.train_feats) / self.cfg.batch_size)
        start = b - b % self.cfg.grad_accum
        return min(self.cfg.grad_accum, n_batches - start)

    def step(self, epoch: int, b: int, indices: list[int], last_of_epoch: bool) -> None:
        cfg, result = self.cfg, self._result
        t0 = time.perf_counter()  # host time: on CUDA the GPU's share is in the epoch time (synchronised)
        batch = self.featurizer.collate([self.train_feats[i] for i in indices])
        model = self.model
        if self.compiled:
            batch = self.compiled.prepare(batch)  # padded to its length bucket: a bounded set of shapes
            model = self.compiled.module
            self.compiled.step_begin()
        batch = self._to(batch)
        loss = None
        if self.graph_steps:
            loss = self.method.graphed_step(model, batch, self._loss_fn, self.params, cfg.max_grad_norm)
        clipped = loss is not None  # inside the step's graph
        if loss is None:
            loss = self.method.train_step(model, batch, self._loss_fn,
                                          scale=self.precision.scale(1.0 / self._group_size(b)))
        if (self.compiled or clipped) and torch.is_tensor(loss):
            loss = loss.clone()  # a CUDA-graph output is overwritten by the next replay; the loss is read later
        self._pending.append(loss)  # a detached tensor (read later, in bulk) or a float
        self.batch_in_epoch = b + 1
        updated = (b + 1) % cfg.grad_accum == 0 or last_of_epoch
        if updated:
            self._optimizer_step(clipped)
            # an epoch's last step too: a run of fewer than log_every steps recorded no loss at all
            logging = self.run and (self.global_step % cfg.log_every == 0 or last_of_epoch)
            if logging or last_of_epoch or self.global_step == 1:
                self._flush_losses()
            if logging:
                self.run.event("train_loss", step=self.global_step, epoch=epoch, loss=self._last_loss,
                               lr=self._current_lr())
            if cfg.checkpoint_steps and self.global_step % cfg.checkpoint_steps == 0 and self.run:
                self.save_checkpoint(self.run.checkpoint_dir)
        result.step_times_s.append(time.perf_counter() - t0)
        if self.compiled:
            self.compiled.note(batch, result.step_times_s[-1])
        if self.progress:
            self.progress(self._last_loss)
        if updated:  # never inside an accumulation: the checkpoint holds no half-summed gradient
            self._stop_if_asked()

    def epoch_end(self, epoch: int, first_batch: int, n_batches: int) -> None:
        result = self._result
        self._flush_losses()
        result.epoch_times_s.append(self.timer.now() - self._t_epoch)
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        if self.run:
            self.run.event("epoch_end", epoch=self.epoch, seconds=result.epoch_times_s[-1])
        if self.evaluate_fn is not None:
            metrics = self.evaluate_fn(self.model)
            result.eval_history.append({"epoch": self.epoch, **metrics})
            if self.run:
                self.run.event("eval", epoch=self.epoch, metrics=_scalars(metrics))
        if self.run:
            self.save_checkpoint(self.run.checkpoint_dir)
        self._stop_if_asked()

    def _optimizer_step(self, clipped: bool) -> None:
        """Step the optimizer and the schedule; `clipped`: the gradients were clipped already (in a graphed step)."""
        if self.optimizer is not None:
            clip = None if clipped else self.cfg.max_grad_norm
            self.precision.step(self.optimizer, self.params, clip)  # unscale (fp16), clip, step
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1

    def _current_lr(self) -> float:
        return self.scheduler.get_last_lr()[0] if self.scheduler else self.lr


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
