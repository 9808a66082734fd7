"""Load a real pretrained model (alias, local folder or hub id) as a Backbone: model + tokenizer + BlockView."""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from edgeft.errors import ModelError
from edgeft.models.arch import ModelArch, arch_from_hf_config
from edgeft.models.blocks import BlockView
from edgeft.models.fetch import fetch
from edgeft.models.sources import SOURCES

HeadKind = Literal["causal_lm", "sequence_classification"]
HEAD_KINDS = get_args(HeadKind)
# What marks an `edgeft compress` output folder (compress/store.py writes them). Named here, below compress, so that
# a plain load can tell an unfinished one from a model folder that lost some weights.
COMPRESSED_MANIFEST = "edgeft_compress.json"
COMPRESSED_WEIGHTS = "model.safetensors"
COMPRESSED_FORMAT = "edgeft-compressed"


def arch_of(config, name: str = "") -> ModelArch:
    """The numbers cost models need (a ModelArch), read from a loaded model's transformers config."""
    cfg = config.to_dict()
    cfg["model_type"] = {"llama": "llama", "bert": "bert"}[family_of(config)]  # the families edgeft runs
    return arch_from_hf_config(cfg, name or config.model_type)


@dataclass
class Backbone:
    name: str  # alias, folder or hub id as the user gave it
    path: str  # resolved local folder (or hub id)
    model: nn.Module
    tokenizer: object
    arch: ModelArch
    head: HeadKind

    @property
    def view(self) -> BlockView:
        return BlockView(self.model, self.arch.family)

    @property
    def identity(self) -> str:
        """Stable id of the weights (used by caches to detect a different backbone)."""
        marker = Path(self.path) / "edgeft_source.json"
        if marker.is_file():
            import json

            return json.loads(marker.read_text())["wheel_sha256"][:16] + ":" + self.name
        return f"{self.path}:{self.model.config._name_or_path}"


LLAMA_TYPES = {"llama", "mistral", "qwen2", "qwen3", "smollm3"}
BERT_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert"}


def family_of(config) -> str:
    mt = config.model_type
    if mt in LLAMA_TYPES:
        return "llama"
    if mt in BERT_TYPES - {"distilbert"}:
        return "bert"
    raise ModelError(f"model type '{mt}' is not supported yet (supported: Llama-family {sorted(LLAMA_TYPES)}, "
                     f"BERT-family bert/roberta).")


def resolve(name: str) -> tuple[str, bool]:
    """A local folder for `name` (fetching an alias), or (hub id, False) for anything else."""
    if name in SOURCES:
        return str(fetch(SOURCES[name])), True
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p}: not a Hugging Face model folder (no config.json).")
        return str(p.resolve()), True  # absolute: the identity an adapter keeps must not depend on the cwd
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"{name}: no such model folder.")
    return name, False


def _load_or_explain(name: str, path: str, local: bool, loader):
    try:
        return loader(path)
    except (OSError, ValueError) as err:
        if local:
            raise ModelError(f"{path}: could not load the model ({err}).") from err
        known = ", ".join(sorted(SOURCES))
        raise ModelError(
            f"unknown model '{name}': not an alias ({known}), not a local folder, and the Hugging Face Hub "
            f"could not serve it ({str(err).splitlines()[0][:200]}). Offline, use an alias or a local folder."
        ) from err


def load_config(name: str):
    """The transformers config of an alias, folder or hub id (fetching an alias on first use)."""
    from transformers import AutoConfig

    path, local = resolve(name)
    return _load_or_explain(name, path, local, AutoConfig.from_pretrained)


def _check_weights_complete(path: str, model, info: dict) -> None:
    """Refuse a folder whose weights lack some of the backbone's tensors: transformers would start them at random
    and say so only in its log, so a fine-tune or an evaluation would run on a broken model. Only a new task head
    (a classifier or score layer, and BERT's pooler, which only such a head reads) may be missing."""
    prefix = f"{model.base_model_prefix}."
    missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(prefix) and ".pooler." not in k)
    if not missing:
        return
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    hint = "Use the complete model folder (or its alias)."
    try:
        from safetensors import safe_open

        with safe_open(str(Path(path) / COMPRESSED_WEIGHTS), "pt") as f:
            if (f.metadata() or {}).get("format") == COMPRESSED_FORMAT:
                hint = (f"The folder holds edgeft-compressed weights but no {COMPRESSED_MANIFEST}: the `edgeft "
                        "compress` step that wrote it did not finish. Run that step again with --overwrite.")
    except Exception:  # not one safetensors file (sharded, .bin, hub cache): the general hint stands
        pass
    raise ModelError(f"{path}: the weights lack {len(missing)} of the model's tensors ({shown}); transformers would "
                     f"start them at random. {hint}")


def load_backbone(name: str, head: HeadKind = "causal_lm", num_labels: int = 2,
                  dtype: torch.dtype = torch.float32, problem_type: str | None = None) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if head not in HEAD_KINDS:
        raise ModelError(f"head='{head}' is not a head edgeft builds; use one of {', '.join(HEAD_KINDS)}.")
    modules_before = len(sys.modules)
    path, local = resolve(name)
    config = load_config(name)
    tokenizer = _load_or_explain(name, path, local, AutoTokenizer.from_pretrained)
    family = family_of(config)
    if head == "causal_lm" and family == "bert":
        raise ModelError(f"'{name}' is an encoder (BERT family): it cannot generate text. "
                         "Use it for classification/regression tasks, or pick a causal LM such as smollm2-135m.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if head == "causal_lm":
        model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
    else:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=dtype, problem_type=problem_type, output_loading_info=True)
    _check_weights_complete(path, model, info)
    if head != "causal_lm":
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    if len(sys.modules) > modules_before:
        # A process's first load imports transformers' model code, and through it torch._dynamo, whose import
        # calls torch.fx.wrap: that frame holds itself (a cycle) and, through f_back, every caller's frame, so
        # the caller's whole run (a fine-tune's model, device cache, CUDA graphs) would outlive it until Python's
        # cycle collector happened to run. Collected here, while the callers still run, nothing is held past them.
        gc.collect()
    return Backbone(name=name, path=path, model=model, tokenizer=tokenizer, arch=arch_of(config, name), head=head)
