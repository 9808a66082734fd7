"""The registered `pac` method: options, building the PacModel for a backbone + task, save and load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from edgeft.data.features import objective_for
from edgeft.errors import ConfigError, ModelError
from edgeft.methods.base import Method, MethodOptions, register_method
from edgeft.methods.pac.cache import ActivationCache, CacheKey, tokenizer_fingerprint, weights_fingerprint
from edgeft.methods.pac.model import PacModel
from edgeft.methods.pac.side_network import ParallelAdapters
from edgeft.methods.pac.taps import Positions, parse_taps
from edgeft.paths import edgeft_home

WEIGHTS, SPEC = "pac.safetensors", "pac.json"


class PacOptions(MethodOptions):
    # the side network
    taps: Union[str, int, list[int]] = Field("all", description="'all', 'every:K' (or K), or block indices")
    reduction: int = Field(8, ge=1, description="adapter width = hidden size / reduction")
    width: Optional[int] = Field(None, ge=1, description="adapter width (overrides reduction)")
    combine: Literal["gated", "sum", "ladder"] = "gated"
    side_blocks: int = Field(1, ge=0, description="residual MLP blocks after combining the taps")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    pool: Literal["auto", "mean", "first", "last"] = Field(
        "auto", description="encoder/classifier pooling (auto: mean for BERT, last token for Llama)")
    # the activation cache
    cache: Literal["memory", "disk", "off"] = "memory"
    cache_dir: Optional[str] = Field(None, description="disk cache folder (default: $EDGEFT_HOME/pac-cache/<key>)")
    cache_dtype: Literal["fp32", "fp16", "bf16", "int8"] = "fp16"
    cache_budget_mb: Optional[float] = Field(None, gt=0)
    on_budget: Literal["error", "recompute"] = "error"
    on_stale: Literal["error", "rebuild"] = "error"
    on_corrupt: Literal["error", "recompute"] = "error"
    verify: bool = Field(True, description="check every entry's CRC-32 when it is read")
    cache_eval: bool = Field(True, description="cache dev samples too (they are as deterministic as training ones)")
    offload_backbone: bool = Field(True, description="move the backbone's blocks to CPU once a whole training batch "
                                                     "comes from the cache (accelerators only)")


def positions_for(objective: str, family: str, pool: str) -> Positions:
    if objective == "lm":
        if pool != "auto":
            raise ConfigError(f"pool={pool}: language modelling needs every position; leave pool=auto.")
        return "all"
    if objective == "verbalize":
        if pool not in ("auto", "last"):
            raise ConfigError(f"pool={pool}: a causal LM's verbalizer reads the last token; leave pool=auto.")
        return "last"
    if pool != "auto":
        return pool  # type: ignore[return-value]
    return "mean" if family == "bert" else "last"


@register_method
class PAC(Method):
    """Parallel adapters on a frozen backbone, fed from an activation cache after epoch 1."""

    name = "pac"
    Options = PacOptions

    def prepare(self, backbone, task) -> PacModel:
        o = self.options
        objective = objective_for(task, backbone.head)
        view = backbone.view
        taps = parse_taps(o.taps, view.num_blocks)
        positions = positions_for(objective, backbone.arch.family, o.pool)
        hidden = backbone.arch.hidden_size
        width = o.width or max(8, hidden // o.reduction)
        side = ParallelAdapters(hidden, len(taps), width, combine=o.combine, dropout=o.dropout,
                                side_blocks=o.side_blocks)
        head = None
        if backbone.head == "sequence_classification":
            head = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(hidden, task.num_labels))
        cache = None
        if o.cache != "off":
            max_length = task.config.max_length if getattr(task, "config", None) is not None else None
            key = CacheKey(backbone=backbone.identity, tokenizer=tokenizer_fingerprint(backbone.tokenizer),
                           weights=weights_fingerprint(backbone.model), taps=taps,
                           max_length=max_length, positions=positions, hidden=hidden, dtype=o.cache_dtype)
            directory = None
            if o.cache == "disk":
                directory = Path(o.cache_dir).expanduser() if o.cache_dir else edgeft_home() / "pac-cache" / key.fingerprint
            cache = ActivationCache(key, storage=o.cache, directory=directory, budget_mb=o.cache_budget_mb,
                                    on_budget=o.on_budget, on_stale=o.on_stale, on_corrupt=o.on_corrupt,
                                    verify=o.verify)
        return PacModel(backbone.model, backbone.arch.family, taps, positions, side, task_head=head, cache=cache,
                        cache_dtype=o.cache_dtype, cache_eval=o.cache_eval, offload_backbone=o.offload_backbone)

    def spec(self, model: PacModel) -> dict:
        return {"taps": list(model.taps), "positions": model.positions, "hidden": model.side.hidden,
                "width": model.side.width, "combine": model.side.combine, "side_blocks": len(model.side.blocks),
                "task_head": model.task_head is not None}

    def save(self, model: PacModel, out_dir: Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.adapter_state().items()}, str(out / WEIGHTS))
        (out / SPEC).write_text(json.dumps(self.spec(model), indent=2))

    def load(self, backbone, task, adapter_dir: Path) -> PacModel:
        d = Path(adapter_dir)
        if not (d / WEIGHTS).is_file() or not (d / SPEC).is_file():
            raise ModelError(f"{d}: not a PAC adapter folder (needs {WEIGHTS} and {SPEC}).")
        model = self.prepare(backbone, task)
        saved = json.loads((d / SPEC).read_text())
        now = self.spec(model)
        diff = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in now.items() if saved.get(k) != v]
        if diff:
            raise ModelError(f"{d}: this PAC adapter does not fit the backbone/task/options it is loaded with "
                             f"({'; '.join(diff)}).")
        state = load_file(str(d / WEIGHTS))
        side = {k[len("side."):]: v for k, v in state.items() if k.startswith("side.")}
        model.side.load_state_dict(side, strict=True)
        if model.task_head is not None:
            model.task_head.load_state_dict({k[len("task_head."):]: v for k, v in state.items()
                                             if k.startswith("task_head.")}, strict=True)
        return model
