"""The compressed-model folder: what is written to disk after each step, and how it is read back.

A folder holds the Hugging Face config + tokenizer, one `model.safetensors` and `edgeft_compress.json`
(the manifest). Tensors are stored as compact as the step allows, so "size on disk" is honest:
- quantised linear layers: `<name>.qweight` (packed codes), `.scales` (float16), `.qzeros` (uint8);
- sparse linear layers: `<name>.weight.values` (non-zeros) + `<name>.weight.bitmask` (1 bit per weight);
- structurally pruned layers simply have smaller shapes (per-layer shapes in the manifest);
- everything else dense, in the chosen storage dtype (float16 by default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from edgeft.compress.embedding_gptq import add_code_buffers, embedding_codes
from edgeft.models.backbone import COMPRESSED_FORMAT, COMPRESSED_MANIFEST, COMPRESSED_WEIGHTS
from edgeft.models.modules import set_module
from edgeft.compress.qlinear import QuantLinear
from edgeft.errors import ConfigError, ModelError
from edgeft.paths import file_in_the_way

MANIFEST = COMPRESSED_MANIFEST
WEIGHTS = COMPRESSED_WEIGHTS
FORMAT = COMPRESSED_FORMAT
FORMAT_VERSION = 1
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
PACKED_SUFFIXES = (".qweight", ".scales", ".qzeros")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.txt", "merges.txt", "vocab.json", "generation_config.json")


def storage_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"dtype '{name}': choose one of {', '.join(DTYPES)}.")
    return DTYPES[name]


@dataclass
class Manifest:
    family: str
    head: str
    source: dict
    dtype: str = "float16"
    quantized: dict = field(default_factory=dict)  # {"bits", "group_size", "sym", "method", "modules": [...]}
    sparse: list = field(default_factory=list)  # module names stored as bitmask + values
    shapes: dict = field(default_factory=dict)  # module -> {out, in, bias} where the config would differ
    steps: list = field(default_factory=list)  # report records of every step so far
    extra: dict = field(default_factory=dict)  # e.g. a kept side module's description

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, **self.__dict__}

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = Path(folder) / MANIFEST
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ModelError(f"{path}: corrupt manifest (not JSON: {err}). Re-run `edgeft compress`.") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ModelError(f"{path}: not an edgeft compressed model (format {found!r}).")
        if data.get("version", 0) > FORMAT_VERSION:
            raise ModelError(f"{path}: written by a newer edgeft (format version {data['version']}); upgrade edgeft.")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = {"family", "head", "source"} - set(fields)
        if missing:
            raise ModelError(f"{path}: manifest lacks {sorted(missing)}; the folder is incomplete.")
        kinds = {"source": dict, "quantized": dict, "sparse": list, "shapes": dict, "steps": list, "extra": dict}
        wrong = [f"{k} (a {type(fields[k]).__name__}, not a {v.__name__})" for k, v in kinds.items()
                 if k in fields and not isinstance(fields[k], v)]
        if wrong:  # each was used as what it should be, an AttributeError far from here
            raise ModelError(f"{path}: manifest has {', '.join(wrong)}; the folder is corrupt or was edited by hand.")
        return cls(**fields)


def check_out_parents(out: str | Path, flag: str = "--out") -> None:
    """Refuse, before any slow work, an output under a path that is a file: creating it failed only once the step
    was done, with a bare NotADirectoryError/FileExistsError."""
    in_the_way = file_in_the_way(Path(out).absolute(), itself=False)
    if in_the_way is not None:
        raise ConfigError(f"{flag} {out}: {in_the_way} is a file, not a folder; choose another {flag}.")


def is_compressed_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


# -- sparse bitmask encoding -----------------------------------------------------------------------------

def encode_sparse(weight: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.detach().to(dtype).cpu()
    mask = (w != 0).numpy()
    bitmask = torch.from_numpy(np.packbits(mask, axis=1))
    return w[torch.from_numpy(mask)].contiguous(), bitmask


def decode_sparse(values: torch.Tensor, bitmask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    mask = torch.from_numpy(np.unpackbits(bitmask.numpy(), axis=1, count=shape[1]).astype(bool))
    if int(mask.sum()) != values.numel():
        raise ModelError(f"sparse weight of shape {list(shape)}: bitmask has {int(mask.sum())} set bits but "
                         f"{values.numel()} values are stored; the file is corrupt.")
    w = torch.zeros(shape, dtype=values.dtype)
    w[mask] = values
    return w


# -- saving ------------------------------------------------------------------------------------------------

def _tied_duplicates(model: nn.Module) -> set[str]:
    seen: dict[int, str] = {}
    dup = set()
    for name, t in model.state_dict(keep_vars=True).items():
        ptr = t.data_ptr() if t.numel() else id(t)
        if ptr in seen:
            dup.add(name)
        else:
            seen[ptr] = name
    return dup


def _embedding_key(model: nn.Module) -> str:
    emb = model.get_input_embeddings()
    return next(f"{name}.weight" for name, m in model.named_modules() if m is emb)


def save_compressed(model: nn.Module, tokenizer, manifest: Manifest, out: str | Path) -> Path:
    """Write the folder; returns the path of the weights file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = storage_dtype(manifest.dtype)
    skip = _tied_duplicates(model)
    if manifest.quantized.get("embedding"):  # its codes are stored; the loader rebuilds the float weight from them
        skip.add(_embedding_key(model))
    sparse = set(manifest.sparse)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if name in skip:
            continue
        module_name = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and module_name in sparse:
            tensors[name + ".values"], tensors[name + ".bitmask"] = encode_sparse(t, dtype)
        elif t.is_floating_point() and not name.endswith(PACKED_SUFFIXES):
            tensors[name] = t.detach().to(dtype).contiguous().cpu()
        else:  # packed codes, float16 scales, integer zeros: stored exactly as they are
            tensors[name] = t.detach().contiguous().cpu()
    manifest.shapes = _shapes_differing_from_config(model)
    save_file(tensors, str(out / WEIGHTS), metadata={"format": FORMAT})
    model.config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2, default=str))
    return out / WEIGHTS


def _shapes_differing_from_config(model: nn.Module) -> dict:
    """Linear layers whose shape a fresh model built from the config would not have (pruned per layer)."""
    fresh = _linear_shapes(_fresh(model.config, type(model)))
    return {name: shape for name, shape in _linear_shapes(model).items() if fresh.get(name) != shape}


def _linear_shapes(model: nn.Module) -> dict:
    return {n: {"out": m.out_features, "in": m.in_features, "bias": m.bias is not None}
            for n, m in model.named_modules() if isinstance(m, (nn.Linear, QuantLinear))}


def _fresh(config, cls):
    with torch.device("meta"):
        return cls(config)


# -- loading -----------------------------------------------------------------------------------------------

def load_compressed(folder: str | Path, int4_kernel: bool = False):
    """(model, tokenizer, manifest) from a compressed folder; the model runs in float32 on CPU.

    int4_kernel: run packed 4-bit layers with torch's int4 CPU matmul where their groups allow it,
    instead of dequantising them in every forward pass.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(folder)
    manifest = Manifest.read(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{folder}: no {WEIGHTS}; the folder is incomplete.")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{weights}: corrupt or truncated safetensors file ({err}). Re-run the step that "
                         "wrote it.") from err
    config = _folder_part(folder, "config.json", AutoConfig.from_pretrained)
    cls = AutoModelForCausalLM if manifest.head == "causal_lm" else AutoModelForSequenceClassification
    model = cls.from_config(config, dtype=torch.float32)
    q = manifest.quantized
    try:  # a manifest naming layers the config lacks (edited by hand) raised a bare AttributeError/KeyError
        for name, shape in manifest.shapes.items():
            set_module(model, name, nn.Linear(shape["in"], shape["out"], bias=shape["bias"]))
        for name in q.get("modules", []):
            old = model.get_submodule(name)
            set_module(model, name, QuantLinear(old.in_features, old.out_features, q["bits"], q["group_size"],
                                                 old.bias is not None))
        if q.get("embedding"):  # codes of the GPTQ-quantised tied embedding (embedding_gptq.py)
            add_code_buffers(model.get_input_embeddings(), q["bits"], q["group_size"])
        sparse_shapes = {name: model.get_submodule(name).weight.shape for name in manifest.sparse}
    except (AttributeError, KeyError, TypeError, ConfigError) as err:
        raise ModelError(f"{folder / MANIFEST}: its layers do not fit the model's config.json ({err}); the folder is "
                         "corrupt or was edited by hand. Re-run the `edgeft compress` step that wrote it.") from err
    for name in manifest.sparse:
        key = f"{name}.weight"
        if key + ".values" not in state or key + ".bitmask" not in state:
            raise ModelError(f"{weights}: sparse layer {name} has no values/bitmask tensors; the file is corrupt.")
        state[key] = decode_sparse(state.pop(key + ".values"), state.pop(key + ".bitmask"), tuple(sparse_shapes[name]))
    expected = model.state_dict()
    for key, t in list(state.items()):
        if key in expected and expected[key].is_floating_point() and t.is_floating_point() \
                and expected[key].dtype != t.dtype:
            state[key] = t.to(expected[key].dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = _tied_duplicates(model)
    if q.get("embedding"):
        tied.add(_embedding_key(model))
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ModelError(f"{weights}: weights do not fit the config (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); the folder is corrupt or was edited by hand.")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    if q.get("embedding"):  # exactly the codes' values, not their float16 rounding
        emb = model.get_input_embeddings()
        emb.weight.data.copy_(embedding_codes(emb, q["bits"], q["group_size"]).dequantized())
    if int4_kernel:
        for m in model.modules():
            if isinstance(m, QuantLinear):
                m.use_int4_kernel()
    model.eval()
    tokenizer = _folder_part(folder, "tokenizer", AutoTokenizer.from_pretrained)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, manifest


def _folder_part(folder: Path, what: str, loader):
    """The folder's config or tokenizer; a missing or damaged one is named (transformers raised a bare OSError or
    ValueError, 'Unrecognized model', with a traceback)."""
    try:
        return loader(folder)
    except (OSError, ValueError) as err:
        raise ModelError(f"{folder}: its {what} is missing or damaged ({str(err).splitlines()[0][:200]}); the folder "
                         "is incomplete. Re-run the `edgeft compress` step that wrote it.") from err


def folder_bytes(folder: str | Path) -> int:
    """Bytes of the weight files (what a device must hold); config/tokenizer files are not counted."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".gguf", ".bin"))
