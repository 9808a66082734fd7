"""The Method interface and its registry (in the spirit of PEFT's tuner registry).

A Method decides what is trainable, how one training step updates it, and how its result is saved
and loaded. The single-device trainer, the multi-device runtime and the federated clients all call
these same objects, so a method written once runs everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from edgeft.config import validate
from edgeft.errors import ConfigError, ModelError
from edgeft.paths import written_whole

ADAPTER_NOTE = "edgeft_adapter.json"


@dataclass(frozen=True)
class BlockCost:
    """One transformer block's cost for one training step of batch x seq_len tokens: what the planner's
    cost table holds per layer. FLOPs, except act_saved (bytes autograd keeps for the backward)."""

    trainable: float  # parameters trained in (or for) this block
    fwd: float
    bwd_pass: float  # the backward that only crosses the block (input gradients)
    bwd_train: float  # the backward of a block whose own parameters (or adapters) train
    act_saved: float


@dataclass(frozen=True)
class DenseBlock:
    """The same block with its weights frozen, as the planner counts it from the architecture alone:
    the starting point a method's cost model adds its own work to."""

    params: int  # every parameter of the block
    matmul_params: int  # of which in matmul weights (their gradients cost 2 x tokens x these FLOPs)
    tokens: int  # batch x seq_len
    dtype_bytes: int
    fwd: float
    bwd_input: float  # input gradients of every matmul and of attention
    act_saved: float  # bytes the frozen block keeps for a backward that crosses it


class MethodOptions(BaseModel):
    """Base for a method's options; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Method:
    name: ClassVar[str]
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    uses_optimizer: ClassVar[bool] = True
    # The learning rate a run takes when none is given (chosen per method; see docs/methods.md).
    default_lr: ClassVar[float] = 1e-4
    # The epochs a run takes when none is given (`edgeft finetune` without --epochs, a config without
    # `epochs`); None: TrainConfig's own default. Explicit epochs always win (epochs_for).
    default_epochs: ClassVar[int | None] = None

    # -- what the planner and the block-wise runtime ask of a method (docs/methods.md) ------------------
    # The registered method whose cost model prices this one for planning: its own name when it has one
    # (block_cost), a close one's when that is a fair stand-in, None when it cannot be planned.
    priced_as: ClassVar[str | None] = None
    # Whether the block-wise strategies (deft, split, hybrid) can run it: they call the backbone's blocks one
    # by one, so whatever the method trains must live in (or beside) the blocks, not in the model's own forward.
    supports_blockwise: ClassVar[bool] = False
    # Which of those block-wise strategies can run it (when supports_blockwise); strategy_problem says why not.
    blockwise_strategies: ClassVar[tuple[str, ...]] = ("deft", "split", "hybrid")
    # Whether training runs backward through the backbone's blocks. False: the backbone only runs forward,
    # without autograd, and a network beside it trains on what it taps (calibration times no block backward).
    trains_backbone: ClassVar[bool] = True
    # Whether later epochs may train on cached backbone activations instead of running the backbone
    # (the planner then prices those epochs as the cached step, data parallel).
    caches_backbone: ClassVar[bool] = False

    def __init__(self, options: MethodOptions | None = None):
        self.options = options or self.Options()

    @classmethod
    def block_cost(cls, arch, workload, dense: DenseBlock) -> BlockCost | None:
        """One block's cost under this method for `workload` (planner.costmodel.Workload); None: no cost model."""
        return None

    @classmethod
    def has_cost_model(cls) -> bool:
        return cls.block_cost.__func__ is not Method.block_cost.__func__

    def cost_workload(self, arch) -> dict:
        """The planner Workload's fields this method's options set (method, ranks, targets); see priced_as."""
        return {"method": self.priced_as}

    def trainable_layout(self, arch, task_kind: str, num_labels: int) -> tuple[list[float], float] | None:
        """(trainable parameters per block, all trainable parameters) when the cost model's per-block count
        does not say where they are (a side network, a head); None: the cost model's count stands."""
        return None

    def uses_cache(self) -> bool:
        """Whether this run, with these options, trains later epochs on cached backbone activations."""
        return self.caches_backbone

    def fills_cache_first(self, strategy: str) -> bool:
        """Whether a run under `strategy` fills the activation cache with a forward-only pass before its first
        step (statistics a step needs must be measured first)."""
        return False

    def run_blockwise(self, strategy: str) -> None:
        """Called before prepare() when a block-wise strategy (deft, split, hybrid) will run the model, so a
        method whose defaults depend on it can resolve them (default: nothing)."""

    def run_as(self, process: str) -> None:
        """Called before prepare() by each process of a collaborative run with its device's name, so a method
        that keeps files per process (PAC's disk cache) can keep them apart (default: nothing)."""

    @classmethod
    def timing_options(cls, options: dict, cached: bool) -> dict:
        """The options (as given) for a calibration build that times the backbone pass (cached=False) or the
        cached step (cached=True)."""
        return dict(options)

    @classmethod
    def strategy_problem(cls, strategy: str) -> str:
        """Why `strategy`, one of the block-wise strategies not in blockwise_strategies, cannot run this method."""
        return f"its block-wise training is written for {', '.join(cls.blockwise_strategies)} only"

    @classmethod
    def blockwise_problem(cls) -> str:
        """Why the block-wise strategies cannot run this method (asked only when supports_blockwise is False)."""
        return "its training does not live in the backbone's blocks, which block-wise execution calls one by one"

    # -- what is trained --------------------------------------------------------------------------
    def prepare(self, backbone, task) -> nn.Module:
        """Return the model to train (the backbone's model, wrapped or modified in place)."""
        raise NotImplementedError

    def lr_for(self, model: nn.Module | None = None) -> float:
        """The learning rate a run takes when none is given, for this prepared model (default_lr unless a
        method's choice depends on the backbone)."""
        return self.default_lr

    def epochs_for(self, train, family: str | None = None) -> int:
        """The epochs of a run with TrainConfig `train` on a backbone of `family` (llama, bert; None: unknown):
        the ones it gives (epochs set in the config or on the command line), else this method's own default for
        that family (default_epochs_for), else TrainConfig's default."""
        own = self.default_epochs_for(family)
        if "epochs" in train.model_fields_set or own is None:
            return train.epochs
        return own

    @classmethod
    def default_epochs_for(cls, family: str | None) -> int | None:
        """This method's own epochs on a backbone of `family` (default_epochs unless it depends on the family)."""
        return cls.default_epochs

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    # -- placement and epochs ------------------------------------------------------------------------
    def place(self, model: nn.Module, device: torch.device | str) -> nn.Module:
        """Put the model on the training device (a method may keep some of it elsewhere)."""
        return model.to(device)

    def on_epoch_start(self, model: nn.Module, epoch: int, feats: list[dict], collate: Callable,
                       resumed: bool = False) -> None:
        """Called by the trainer as each epoch starts, inside the epoch's time (default: nothing). `resumed`: the
        first epoch of a run resumed from a checkpoint, perhaps part-way through it, in a fresh process whose model
        holds only what the checkpoint restored."""

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors besides the trainable parameters that a checkpoint must hold for a resumed run to go on exactly
        as the uninterrupted one would (default: none)."""
        return {}

    def load_checkpoint_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Put back what `checkpoint_state` returned (the default holds nothing)."""

    # -- one step ----------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, batch: dict, loss_fn: Callable[[nn.Module, dict], torch.Tensor],
                   scale: float = 1.0) -> torch.Tensor | float:
        """Compute the loss and accumulate gradients (the trainer steps the optimizer). Returns the loss as a
        detached tensor: the trainer reads many at once, so a step does not wait for the GPU."""
        loss = loss_fn(model, batch)
        (loss * scale).backward()
        return loss.detach()

    def graphed_step(self, model: nn.Module, batch: dict, loss_fn: Callable, params: list,
                     max_grad_norm: float | None) -> torch.Tensor | None:
        """`train_step` with the gradients also clipped, as one replayed CUDA graph, when the method can capture
        this batch's step (the trainer asks only on CUDA, in fp32/tf32, without accumulation); None: it cannot,
        and the trainer calls `train_step`. The loss returned is overwritten by the next replay."""
        return None

    # -- persistence --------------------------------------------------------------------------------
    def save(self, model: nn.Module, out_dir: Path) -> None:
        raise NotImplementedError

    def load(self, backbone, task, adapter_dir: Path) -> nn.Module:
        raise NotImplementedError


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'. Choose one of: {', '.join(sorted(METHODS))}.")
    return METHODS[name]


def check_strategy(name: str, strategy: str) -> None:
    """A ConfigError saying why the collaborative `strategy` cannot run method `name` and what to use instead.
    Asked before a launch or a plan does any work, and again by each worker."""
    cls = method_class(name)
    runs = sorted(n for n, c in METHODS.items() if c.supports_blockwise and strategy in c.blockwise_strategies)
    if not cls.supports_blockwise:
        raise ConfigError(f"method '{name}' cannot run block by block (split, deft, pipeline): "
                          f"{cls.blockwise_problem()}. Use one of: {', '.join(runs)}.")
    if strategy not in cls.blockwise_strategies:
        raise ConfigError(f"method '{name}' cannot run under the {strategy} strategy: "
                          f"{cls.strategy_problem(strategy)}. Use --strategy {' or '.join(cls.blockwise_strategies)}, "
                          f"or with {strategy} one of: {', '.join(runs)}.")


def costed_methods() -> tuple[str, ...]:
    """Methods with their own cost model, which the planner can price a block under."""
    return tuple(sorted(n for n, c in METHODS.items() if c.has_cost_model()))


def get_method(name: str, options: dict | None = None) -> Method:
    cls = method_class(name)
    return cls(validate(cls.Options, options or {}, f"method '{name}' options", "method options",
                        f"`edgeft methods {name}` lists them"))


def write_adapter_note(out_dir: Path, method: Method, backbone, task, extra: dict | None = None) -> None:
    """A small JSON beside the weights saying which backbone, task and options they belong to."""
    note = {
        "method": method.name,
        "options": method.options.model_dump(),
        "backbone": backbone.name,
        "backbone_identity": backbone.identity,
        "head": backbone.head,
        "num_labels": task.num_labels if task.kind in ("classification", "regression") else None,
        "task": task.name,
        "task_shape": task.shape(),
        **({"task_config": own_data_config(task.config)} if task.config is not None and task.config.data_file
           else {}),
        **(extra or {}),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / ADAPTER_NOTE).write_text(json.dumps(note, indent=2))


def save_adapter(out_dir: Path, method: Method, model: nn.Module, backbone, task, extra: dict | None = None) -> Path:
    """A run's trained result (finetune, launch, federate): the method's weights and the note beside them, written
    whole or not at all (paths.written_whole), so a run stopped mid-write leaves no half adapter."""
    out = Path(out_dir)
    with written_whole(out) as partial:
        method.save(model, partial)
        write_adapter_note(partial, method, backbone, task, extra)
    return out


def own_data_config(cfg) -> dict:
    """A user's data file and how it was read (TaskConfig keys without the run's sizes), its paths absolute:
    what `edgeft compress` needs to calibrate on and score the adapter's own task later."""
    from edgeft.data.tasks import SIZE_KEYS

    keys = {k: v for k, v in cfg.model_dump().items() if k not in SIZE_KEYS}
    for k in ("data_file", "dev_file"):
        if keys.get(k):
            keys[k] = str(Path(keys[k]).resolve())
    return keys


def read_adapter_note(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / ADAPTER_NOTE
    if not path.is_file():
        raise ModelError(f"{adapter_dir}: not an edgeft adapter folder (no {ADAPTER_NOTE}).")
    return json.loads(path.read_text())


def check_backbone_matches(note: dict, backbone, adapter_dir: Path) -> None:
    if note.get("backbone_identity") and note["backbone_identity"] != backbone.identity:
        raise ModelError(
            f"{adapter_dir}: this adapter was trained on backbone '{note['backbone']}' "
            f"({note['backbone_identity']}), not on '{backbone.name}' ({backbone.identity}). "
            "Load it with the backbone it was trained on."
        )
