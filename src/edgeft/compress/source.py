"""Open whatever the user points `compress`/`export` at: an alias or model folder (+ adapter), or the
output folder of an earlier compression step (so steps chain: prune -> distill -> gptq -> export)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeft.compress.merge import adapter_head, merge_adapter
from edgeft.compress.store import Manifest, is_compressed_folder, load_compressed
from edgeft.errors import ModelError
from edgeft.models.backbone import Backbone, arch_of, family_of, load_backbone, load_config


@dataclass
class Source:
    backbone: Backbone  # .model is a plain transformers model (possibly with QuantLinear layers)
    manifest: Manifest  # provenance and the steps applied so far
    side_module: Path | None = None


def open_model(model: str, adapter: Path | None = None) -> Source:
    if is_compressed_folder(model):
        if adapter is not None:
            raise ModelError(f"{model} is already compressed; an adapter cannot be merged into compressed weights. "
                             "Merge it first: edgeft compress --model BASE --adapter ADAPTER ...")
        net, tok, manifest = load_compressed(model)
        bb = Backbone(name=str(model), path=str(model), model=net, tokenizer=tok,
                      arch=arch_of(net.config), head=manifest.head)
        side = manifest.extra.get("side_module")
        return Source(bb, manifest, Path(model) / side if side else None)
    if adapter is not None:
        head, num_labels = adapter_head(adapter)
    else:  # load_config names a damaged config.json (a bare OSError/ValueError from transformers before)
        head = "sequence_classification" if family_of(load_config(model)) == "bert" else "causal_lm"
        num_labels = 2
    bb = load_backbone(model, head=head, num_labels=num_labels or 2)
    source = {"model": model, "identity": bb.identity, "path": bb.path}
    side = None
    if adapter is not None:
        merged = merge_adapter(bb, Path(adapter))
        bb.model = merged.model
        source.update(adapter=str(adapter), adapter_note=merged.note)
        side = merged.side_module
        if side is not None:
            source["side_module_reason"] = merged.reason
    manifest = Manifest(family=bb.arch.family, head=bb.head, source=source)
    return Source(bb, manifest, side)
