"""The Method interface and its registry (in the spirit of PEFT's tuner registry).

A Method decides what is trainable, how one training step updates it, and how its result is saved
and loaded. The single-device trainer, the multi-device runtime and the federated clients all call
these same objects, so a method written once runs everywhere.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
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
    """Base for a method's options; unknown keys are errors, and so are infinities and NaN (a MeZO lr=.inf trained
    an adapter of NaN and reported success)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # Options that change how a run goes about its work, not what it trains: `--resume` may change them (it refused
    # a resumed PAC run whose only change was where its disk cache lives, or verify=false).
    RUN_ONLY: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value, info: ValidationInfo):
        """YAML's true/false are not numbers: pydantic read `--option r=true` as rank 1 and `taps=true` as every
        block, without a word."""
        if _takes_bool(cls.model_fields[info.field_name].annotation):
            return value
        if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
            raise ValueError(f"got a yes/no value ({value!r}), but this option takes "
                             f"{type_words(cls.model_fields[info.field_name].annotation)}")
        return value


def _takes_bool(annotation) -> bool:
    """Whether an option's type admits true/false (bool, or a dict of anything)."""
    if annotation is bool or annotation is dict:
        return True
    return any(_takes_bool(a) for a in typing.get_args(annotation))


def type_words(annotation) -> str:
    """An option's type as `edgeft methods` prints it: int, float | None, gated | sum, list[int]."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_words(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_words(a) for a in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


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
    # Whether the method trains the embedding table too (full fine-tuning): the planner prices its sync and state.
    trains_embedding: ClassVar[bool] = False

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
                        options_hint(cls, options or {})))


def options_hint(cls: type[Method], options: dict) -> str:
    """Where the options are listed, and whose an unknown one is when another method has it: `--method pac --option
    r=4` said only 'unknown option'; for mezo/fwdgrad it belongs in base_options."""
    hint = f"`edgeft methods {cls.name}` lists them"
    strays = [k for k in options if k not in cls.Options.model_fields]
    owners = sorted(n for n, c in METHODS.items() if len(strays) == 1 and strays[0] in c.Options.model_fields)
    if owners:  # one hint serves every unknown key of the message: only said where there is one
        key = strays[0]
        where = (f"give it as --option 'base_options={{{key}: ...}}'" if "base_options" in cls.Options.model_fields
                 else f"use --method {' or '.join(owners)}")
        hint += f"; {key} is an option of {', '.join(owners)}: {where}"
    return hint


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


# What to do about an adapter folder with a file missing or unreadable (every such error ends with it).
ADAPTER_FIX = ("Point --adapter at the adapter folder `edgeft finetune --out RUN` wrote (RUN/adapter), or re-run "
               "the fine-tune to write it again.")
# The keys of the note that loading an adapter reads (write_adapter_note writes them all).
NOTE_KEYS = {"method": str, "options": dict, "head": str}


def damaged_adapter(adapter_dir: Path, name: str, problem: str) -> ModelError:
    """The error for adapter file `name` of `adapter_dir` that is missing or unreadable (`problem` says which)."""
    return ModelError(f"{adapter_dir}: the adapter file {Path(adapter_dir) / name} {problem}. {ADAPTER_FIX}")


def read_adapter_json(adapter_dir: Path, name: str) -> dict:
    """The JSON object in adapter file `name`; a ModelError naming the file when it is missing, not JSON (a write cut
    short) or not an object."""
    path = Path(adapter_dir) / name
    if not path.is_file():
        raise damaged_adapter(adapter_dir, name, "is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise damaged_adapter(adapter_dir, name, f"cannot be read as JSON ({err})") from err
    if not isinstance(data, dict):
        raise damaged_adapter(adapter_dir, name, f"holds a {type(data).__name__}, not a JSON object")
    return data


def read_adapter_weights(adapter_dir: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors of safetensors file `name` of an adapter folder; a ModelError naming the file when it is missing
    or unreadable (cut short, not safetensors)."""
    from safetensors.torch import load_file

    check_adapter_weights(adapter_dir, name)
    try:
        return load_file(str(Path(adapter_dir) / name))
    except Exception as err:  # SafetensorError, OSError: whatever the file's damage, the fix is the same
        raise damaged_adapter(adapter_dir, name, f"cannot be read as safetensors ({err})") from err


def check_adapter_weights(adapter_dir: Path, name: str) -> None:
    """A ModelError naming safetensors file `name` of an adapter folder when it is missing, or when its header or
    length shows it damaged (cut short, not safetensors); reads the header only, not the tensors."""
    from safetensors import safe_open

    path = Path(adapter_dir) / name
    if not path.is_file():
        raise damaged_adapter(adapter_dir, name, "is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as err:  # SafetensorError (invalid header, incomplete file), OSError
        raise damaged_adapter(adapter_dir, name, f"cannot be read as safetensors ({err})") from err


def read_adapter_note(adapter_dir: Path) -> dict:
    """The adapter's edgeft_adapter.json; a ModelError naming it when the folder is not an adapter folder, or the
    note is missing, unreadable or lacks what loading the adapter reads."""
    d = Path(adapter_dir)
    if not d.is_dir():
        raise ModelError(f"{adapter_dir}: no such adapter folder. {ADAPTER_FIX}")
    if not (d / ADAPTER_NOTE).is_file():
        if (d / "adapter" / ADAPTER_NOTE).is_file():  # the run folder itself: say which folder inside it
            raise ModelError(f"{adapter_dir}: a run folder, not its adapter; pass --adapter {d / 'adapter'}.")
        raise ModelError(f"{adapter_dir}: not an edgeft adapter folder (no {ADAPTER_NOTE}). {ADAPTER_FIX}")
    note = read_adapter_json(d, ADAPTER_NOTE)
    for key, kind in NOTE_KEYS.items():
        if not isinstance(note.get(key), kind):
            problem = "lacks" if key not in note else f"has a {type(note[key]).__name__} for"
            raise damaged_adapter(d, ADAPTER_NOTE, f"{problem} '{key}' (a {kind.__name__}), which loading the "
                                                   "adapter reads")
    return note


def _shape_words(kind: str | None, num_labels: int | None, labels: list | None = None) -> str:
    if kind == "regression" or (kind is None and num_labels == 1):
        return "regression (one score)"
    if kind == "classification" or (kind is None and num_labels):
        named = f": {', '.join(map(str, labels))}" if labels else ""
        return f"classification into {num_labels} classes{named}"
    return f"{kind} (no classifier head)"


def check_adapter_fits_task(note: dict, task, adapter_dir: Path) -> None:
    """A ModelError when the adapter's classifier head cannot score `task` (a data.Task): its note records the task it
    was trained on (task_shape: kind, labels; num_labels) and a head sized for it, so a regression head cannot score
    a classification task, nor a 2-class head a 3-class task or a regression. A causal-LM adapter has no such head
    (classification there is by label words) and fits every task its objective can read. Call it with the note
    (read_adapter_note) before the backbone is built from the note's num_labels."""
    if note.get("head", "causal_lm") == "causal_lm":
        return
    shape = note.get("task_shape") if isinstance(note.get("task_shape"), dict) else {}
    kind, labels = shape.get("kind"), note.get("num_labels")
    if kind is None and labels is None:  # nothing recorded to compare with
        return
    if kind is None:
        kind = "regression" if labels == 1 else "classification"
    if labels is None and kind == "regression":
        labels = 1
    fits = task.kind == kind and (labels is None or labels == task.num_labels)
    if fits:
        return
    trained = note.get("task") or shape.get("name") or "its task"
    ours = _shape_words(kind, labels, shape.get("label_names"))
    theirs = _shape_words(task.kind, task.num_labels if task.kind in ("classification", "regression") else None,
                          task.label_names if task.kind == "classification" else None)
    raise ModelError(
        f"{adapter_dir}: this adapter's {note.get('head')} head was trained on '{trained}', {ours} (as its "
        f"{ADAPTER_NOTE} records), but task '{task.name}' is {theirs}: the head cannot score it. Evaluate the adapter "
        f"on a task of its own shape (e.g. --task {trained}), or fine-tune one for this task "
        f"(`edgeft finetune --task {task.name}`).")


def check_backbone_matches(note: dict, backbone, adapter_dir: Path) -> None:
    if note.get("backbone_identity") and note["backbone_identity"] != backbone.identity:
        raise ModelError(
            f"{adapter_dir}: this adapter was trained on backbone '{note['backbone']}' "
            f"({note['backbone_identity']}), not on '{backbone.name}' ({backbone.identity}). "
            "Load it with the backbone it was trained on."
        )
