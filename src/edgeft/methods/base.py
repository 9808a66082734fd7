"""The Method interface and its registry (in the spirit of PEFT's tuner registry).

A Method decides what is trainable, how one training step updates it, and how its result is saved
and loaded. The single-device trainer, the multi-device runtime and the federated clients all call
these same objects, so a method written once runs everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from edgeft.config import validate
from edgeft.errors import ConfigError, ModelError

ADAPTER_NOTE = "edgeft_adapter.json"


class MethodOptions(BaseModel):
    """Base for a method's options; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Method:
    name: ClassVar[str]
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    uses_optimizer: ClassVar[bool] = True
    # The learning rate a run takes when none is given (chosen per method; see docs/methods.md).
    default_lr: ClassVar[float] = 1e-4

    def __init__(self, options: MethodOptions | None = None):
        self.options = options or self.Options()

    # -- what is trained --------------------------------------------------------------------------
    def prepare(self, backbone, task) -> nn.Module:
        """Return the model to train (the backbone's model, wrapped or modified in place)."""
        raise NotImplementedError

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    # -- placement and epochs ------------------------------------------------------------------------
    def place(self, model: nn.Module, device: torch.device | str) -> nn.Module:
        """Put the model on the training device (a method may keep some of it elsewhere)."""
        return model.to(device)

    def on_epoch_start(self, model: nn.Module, epoch: int, feats: list[dict], collate: Callable) -> None:
        """Called by the trainer as each epoch starts, inside the epoch's time (default: nothing)."""

    # -- one step ----------------------------------------------------------------------------------
    def train_step(self, model: nn.Module, batch: dict, loss_fn: Callable[[nn.Module, dict], torch.Tensor],
                   scale: float = 1.0) -> float:
        """Compute the loss and accumulate gradients (the trainer steps the optimizer)."""
        loss = loss_fn(model, batch)
        (loss * scale).backward()
        return float(loss.detach())

    # -- persistence --------------------------------------------------------------------------------
    def save(self, model: nn.Module, out_dir: Path) -> None:
        raise NotImplementedError

    def load(self, backbone, task, adapter_dir: Path) -> nn.Module:
        raise NotImplementedError


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str, options: dict | None = None) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'. Choose one of: {', '.join(sorted(METHODS))}.")
    cls = METHODS[name]
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
        **(extra or {}),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / ADAPTER_NOTE).write_text(json.dumps(note, indent=2))


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
