"""Fold a fine-tuning result into the backbone, giving one plain model that can be compressed and exported.

- LoRA (PEFT): `merge_and_unload()` adds B·A·(alpha/r) into each target weight; exact up to float error.
- full / BitFit: the saved weights (and BitFit's new biases) are loaded into the backbone.
- Methods whose result is a separate network (PAC's parallel adapters, prompt tuning's virtual
  tokens) cannot in general be folded into the backbone's weights. If the method offers
  `fold(model)` it is used; otherwise the backbone is compressed alone and the adapter folder is
  kept beside it as a side module (see `MergeResult.side_module`); GGUF export refuses such models
  because llama.cpp cannot run the side network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from edgeft.errors import ConfigError, ModelError
from edgeft.methods import get_method
from edgeft.methods.base import ADAPTER_NOTE, check_backbone_matches, read_adapter_note

UNMERGEABLE = {
    "prompt": "prompt tuning prepends learned virtual-token embeddings to every input; no weight can hold them",
}


def _merged(peft_model) -> nn.Module:
    """PEFT's merge, with no trace of the adapter left: peft 0.18 leaves a stale `peft_config` on the returned
    model (0.21 removes it), so the merged model still looked like one that carries an adapter."""
    model = peft_model.merge_and_unload()
    if "peft_config" in vars(model):
        del model.peft_config
    return model.eval()


def weights_method(note: dict) -> str:
    """The method whose weights an adapter folder holds: a zeroth-order run's base (mezo, fwdgrad and the
    federated FedKSeed/FwdLLM tune a base method's parameters and save them as it does), else the run's own."""
    return (note.get("options") or {}).get("base") or note.get("method")


@dataclass
class MergeResult:
    model: nn.Module  # plain transformers model (no PEFT wrapper)
    note: dict  # the adapter's edgeft_adapter.json
    side_module: Path | None = None  # adapter folder kept beside the model when it cannot be folded
    reason: str = ""  # why it was kept as a side module


def adapter_head(adapter_dir: Path) -> tuple[str, int | None]:
    note = read_adapter_note(adapter_dir)
    return note.get("head", "causal_lm"), note.get("num_labels")


def task_for(note: dict, adapter_dir: Path):
    """The task the adapter was trained for: its recorded shape (kind, labels, prompt, pairs), so that an adapter
    trained on a user's own file loads without that file; notes written before shapes were recorded name a
    bundled task."""
    from edgeft.data import TaskConfig, load_task
    from edgeft.data.tasks import Task

    if note.get("task_shape"):
        return Task.from_shape(note["task_shape"])
    try:
        return load_task(TaskConfig(name=note["task"], train_samples=1, dev_samples=1,
                                    max_length=int(note.get("max_length") or 128)))
    except ConfigError as err:
        raise ModelError(f"{adapter_dir}: this adapter was trained on '{note['task']}', which is not a bundled task, "
                         f"and its {ADAPTER_NOTE} was written before edgeft recorded the task's shape; train it "
                         "again with this version, or evaluate it with `edgeft eval --data-file` on its data.") from err


def merge_adapter(backbone, adapter_dir: Path) -> MergeResult:
    """Merge the adapter in `adapter_dir` into `backbone.model` (checks it was trained on this backbone)."""
    adapter_dir = Path(adapter_dir)
    note = read_adapter_note(adapter_dir)
    check_backbone_matches(note, backbone, adapter_dir)
    if note.get("head") and note["head"] != backbone.head:
        raise ModelError(f"{adapter_dir}: the adapter was trained with a '{note['head']}' head but the backbone was "
                         f"loaded with '{backbone.head}'.")
    name, weights = note.get("method"), weights_method(note)
    if weights in UNMERGEABLE:
        return MergeResult(backbone.model, note, adapter_dir, UNMERGEABLE[weights])
    method = get_method(name, note.get("options") or {})
    if name == "lora":
        from edgeft.methods.peft_methods import load_peft_adapter

        try:
            peft_model = load_peft_adapter(backbone.model, adapter_dir)  # a damaged folder: named, never the hub
        except (ValueError, RuntimeError, KeyError, OSError) as err:
            raise ModelError(f"{adapter_dir}: the LoRA weights do not load into '{backbone.name}' ({err}).") from err
        return MergeResult(_merged(peft_model), note)
    model = method.load(backbone, task_for(note, adapter_dir), adapter_dir)
    if hasattr(model, "merge_and_unload"):
        return MergeResult(_merged(model), note)
    if hasattr(method, "fold"):
        folded = method.fold(model)
        if folded is not None:
            return MergeResult(folded.eval(), note)
    if model is backbone.model or _same_architecture(model, backbone.model):
        for p in model.parameters():
            p.requires_grad_(False)
        return MergeResult(model.eval(), note)
    return MergeResult(backbone.model, note, adapter_dir,
                       f"method '{name}' trains a network beside the backbone and offers no fold()")


def _same_architecture(model: nn.Module, base: nn.Module) -> bool:
    return type(model) is type(base)
