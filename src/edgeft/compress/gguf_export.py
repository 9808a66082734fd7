"""Write a Llama-family model (merged, pruned and/or GPTQ-quantised) as a GGUF file llama.cpp runs.

Written with gguf-py (llama.cpp's own GGUF library) rather than by calling convert_hf_to_gguf.py:
that script is not shipped with any installable package (only in llama.cpp's source tree), and it
reads a model folder, so it could not see edgeft's packed GPTQ codes or per-layer pruned shapes.
What this writer does follows the converter's LlamaModel: the same metadata keys, tensor names
(gguf.get_tensor_name_map), the q/k row permutation llama.cpp's rotary embedding expects, and the
same vocabulary (gguf_vocab.py). A structurally pruned model whose blocks differ in size is written
as llama.cpp's "deci" architecture (DeciLM/Nemotron-NAS), which is Llama with per-layer head and
feed-forward counts.

Tensor types: 1-D tensors (norms, biases) stay F32. f32/f16/bf16 store every matrix in that type.
q8_0/q4_0/q4_1/q5_0/q5_1 quantise the matrices with gguf-py (round to nearest; the embedding, which is
also the output layer when tied, gets Q8_0 for the 4/5-bit types unless `embed_type` says otherwise,
as llama.cpp's quantiser keeps the output at higher precision). "auto" writes GPTQ codes *as they are*
(group size 32: 4-bit symmetric -> Q4_0, 4-bit asymmetric -> Q4_1, 8-bit symmetric -> Q8_0), so
llama.cpp runs the very weights GPTQ chose; the tied embedding too when GPTQ quantised it
(embedding_gptq.py), else it is rounded to the matching budget type (AUTO_EMBED);
GPTQ codes that map onto no block type are refused with what to do, never silently widened to F16.
"auto" on a model that is not quantised writes F16 (lossless). Every export reports its size in bits
per weight over the number of weights (elements of all tensors written, the tied embedding once):
`bits_per_weight` counts the tensor data (llama.cpp's own "BPW"), `file_bits_per_weight` the whole
file, vocabulary and metadata included (SmolLM2: +0.11).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from edgeft.compress.embedding_gptq import embedding_codes
from edgeft.compress.gguf_vocab import add_vocab
from edgeft.compress.qlinear import QuantLinear
from edgeft.errors import ConfigError, ModelError

GGUF_TYPES = ("auto", "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
BLOCK = 32  # elements per block of every ggml type written here
# the embedding (= the output layer when tied) under "auto", by the GPTQ bit width: chosen so that the file stays
# within the blocks' budget (docs/benchmarks_compress.md: q4_0 blocks + q8_0 embedding is 5.4 bits/weight)
AUTO_EMBED = {4: "q4_0", 8: "q8_0"}


def check_gguf_type(name: str, where: str = "GGUF type") -> str:
    if name.lower() not in GGUF_TYPES:
        raise ConfigError(f"unknown {where} '{name}'. Choose one of: {', '.join(GGUF_TYPES)} "
                          "(K-quants such as q4_k_m: quantise the f16 export with llama.cpp's llama-quantize).")
    return name.lower()


def _qtype(name: str):
    import gguf

    return {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
            "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
            "q4_0": gguf.GGMLQuantizationType.Q4_0, "q4_1": gguf.GGMLQuantizationType.Q4_1,
            "q5_0": gguf.GGMLQuantizationType.Q5_0, "q5_1": gguf.GGMLQuantizationType.Q5_1}[name]


def _file_type(name: str):
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
            "q5_0": gguf.LlamaFileType.MOSTLY_Q5_0, "q5_1": gguf.LlamaFileType.MOSTLY_Q5_1}[name]


def permute_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF rotary layout (halves) -> llama.cpp's (interleaved pairs), per head: LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# -- GPTQ codes as ggml blocks ------------------------------------------------------------------------------

def native_type(q: QuantLinear, sym: bool) -> str | None:
    """The ggml type these GPTQ codes are exactly (None if none is)."""
    if q.group_size != BLOCK or q.in_features % BLOCK:
        return None
    if q.bits == 4:
        return "q4_0" if sym else "q4_1"
    if q.bits == 8 and sym:
        return "q8_0"
    return None


def check_native(model, quantized: dict) -> None:
    """Refuse "auto" for GPTQ codes that map onto no ggml block type, saying what to do instead."""
    bad = [(name, m) for name, m in model.named_modules()
           if isinstance(m, QuantLinear) and native_type(m, bool(quantized.get("sym"))) is None]
    if not bad:
        return
    name, m = bad[0]
    grid = f"{m.bits}-bit g{m.group_size} {'symmetric' if quantized.get('sym') else 'asymmetric'}"
    raise ConfigError(
        f"GGUF export --gguf-type auto: the {quantized.get('method', 'quantised')} codes of {len(bad)} layers "
        f"(first: {name}, {grid}, {m.in_features} inputs) map onto no ggml block type; only group size 32 with "
        "4-bit symmetric (Q4_0, 4.5 bits/weight), 4-bit asymmetric (Q4_1, 5.0) or 8-bit symmetric (Q8_0, 8.5) "
        "codes are written as they are. Either compress again with --group-size 32 (the default) and "
        "--option sym=true, or choose --gguf-type q4_0|q4_1|q5_0|q5_1|q8_0 (re-rounds the dequantised weights "
        "to nearest: more error) or f16 (exact, about 3.5 times larger).")


def gptq_blocks(q: QuantLinear, qtype: str, row_perm: torch.Tensor | None = None) -> np.ndarray:
    """ggml block bytes (rows, row_bytes) built from packed GPTQ codes, without requantising."""
    codes = q.codes().to(torch.int32)  # (rows, cols) in [0, maxq]
    scale = q.scales.float()  # (rows, groups)
    zero = q.qzeros.float()
    if row_perm is not None:
        codes, scale, zero = codes[row_perm], scale[row_perm], zero[row_perm]
    rows, cols = codes.shape
    nb = cols // BLOCK
    c = codes.view(rows, nb, BLOCK).numpy()
    d = scale.numpy().astype(np.float16).view(np.uint8).reshape(rows, nb, 2)
    if qtype == "q8_0":  # w = s (q - 128) = d * int8(q - 128)
        qs = (c - 128).astype(np.int8).view(np.uint8)
        blocks = np.concatenate([d, qs], -1)
    else:
        nib = (c[..., :16] | (c[..., 16:] << 4)).astype(np.uint8)
        if qtype == "q4_0":  # w = s (q - 8) = d * (q - 8)
            blocks = np.concatenate([d, nib], -1)
        else:  # q4_1: w = s (q - z) = d * q + m with m = -s z
            m = (-(scale * zero)).numpy().astype(np.float16).view(np.uint8).reshape(rows, nb, 2)
            blocks = np.concatenate([d, m, nib], -1)
    return blocks.reshape(rows, -1)


# -- the writer -------------------------------------------------------------------------------------------

def _layer_sizes(model, head_dim: int):
    layers = model.model.layers
    heads = [layer.self_attn.q_proj.out_features // head_dim for layer in layers]
    kv = [layer.self_attn.k_proj.out_features // head_dim for layer in layers]
    ff = [layer.mlp.gate_proj.out_features for layer in layers]
    return heads, kv, ff


def _one_or_list(values: list[int]):
    return values[0] if len(set(values)) == 1 else values


def tensor_kinds(model, gguf_type: str, embed_type: str | None, quantized: dict) -> tuple[str, str]:
    """(type of the blocks' dense matrices, type of the embedding/output) for this request.

    Under "auto" the blocks' GPTQ layers are written natively (checked here) and the first value only
    applies to dense matrices left in them (none after GPTQ)."""
    packed = [m for m in model.modules() if isinstance(m, QuantLinear)]
    if gguf_type == "auto" and packed:
        check_native(model, quantized)
        embed = AUTO_EMBED.get(packed[0].bits, "f16")
        matrix = "f16"
    else:
        matrix = "f16" if gguf_type == "auto" else gguf_type
        embed = "q8_0" if matrix in ("q4_0", "q4_1", "q5_0", "q5_1") else matrix
    if embed_type not in (None, "auto"):
        embed = check_gguf_type(embed_type, "embedding type")
        if embed == "auto":
            raise ConfigError("embedding type 'auto' is the default; name a type such as q4_0, q8_0 or f16.")
    return matrix, embed


def export_gguf(model, tokenizer, out_path: str | Path, gguf_type: str = "f16", manifest=None,
                name: str | None = None, progress=None, embed_type: str | None = None) -> dict:
    """Write `model` to out_path; returns what was written (types per tensor, bits per weight, notes, seconds).

    embed_type: the token embedding's (and untied output layer's) type; None: see tensor_kinds."""
    import gguf

    t0 = time.perf_counter()
    gguf_type = check_gguf_type(gguf_type)
    cfg = model.config
    if getattr(model, "get_base_model", None) is not None and hasattr(model, "peft_config"):
        raise ModelError("GGUF export needs a merged model; merge the adapter first (edgeft compress --method merge).")
    if cfg.model_type not in ("llama", "mistral", "smollm3") or not hasattr(model, "lm_head"):
        raise ModelError(f"GGUF export: '{cfg.model_type}' with a "
                         f"{'classification' if not hasattr(model, 'lm_head') else 'LM'} head is not supported; "
                         "edgeft writes Llama-family causal language models (llama.cpp's 'llama'/'deci').")
    if manifest is not None and manifest.extra.get("side_module"):
        raise ModelError("GGUF export: this model keeps its adapter as a side network (it could not be merged); "
                         "llama.cpp cannot run it. Export a LoRA/full/BitFit fine-tune instead.")
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in ("default", "linear"):
        raise ModelError(f"GGUF export: rope type '{rope_type}' is not handled by edgeft's writer.")
    rope_theta = (rope.get("rope_theta") if isinstance(rope, dict) else None) or getattr(cfg, "rope_theta", 10000.0)

    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    heads, kv, ff = _layer_sizes(model, head_dim)
    uniform = len(set(heads)) == len(set(kv)) == len(set(ff)) == 1
    arch = gguf.MODEL_ARCH.LLAMA if uniform else gguf.MODEL_ARCH.DECI
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    n_layers = len(heads)
    vocab_size = model.get_input_embeddings().weight.shape[0]
    quantized = (manifest.quantized or {}) if manifest is not None else {}
    sym = bool(quantized.get("sym"))
    kinds = tensor_kinds(model, gguf_type, embed_type, quantized)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place once whole: an export cut short (Ctrl-C, out of memory, a
    # full disk) leaves the earlier file as it was, never a truncated .gguf under the name llama.cpp is given.
    partial = out_path.with_name(out_path.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch_name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or out_path.stem)
    writer.add_block_count(n_layers)
    writer.add_context_length(int(getattr(cfg, "max_position_embeddings", 2048)))
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(_one_or_list(ff))
    writer.add_head_count(_one_or_list(heads))
    writer.add_head_count_kv(_one_or_list(kv))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope_theta))
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(vocab_size)
    writer.add_rope_dimension_count(head_dim)
    native = {native_type(m, sym) for m in model.modules() if isinstance(m, QuantLinear)} - {None}
    file_type = (native.pop() if len(native) == 1 else "f16") if gguf_type == "auto" else gguf_type
    writer.add_file_type(_file_type(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    notes = add_vocab(writer, tokenizer, vocab_size)

    tmap = gguf.get_tensor_name_map(arch, n_layers)
    tied = getattr(cfg, "tie_word_embeddings", False)
    counts: dict[str, int] = {}
    weights = data_bytes = 0
    emb_codes = embedding_codes(model.get_input_embeddings(), quantized.get("bits", 0),
                                quantized.get("group_size", 0)) \
        if gguf_type == "auto" and quantized.get("embedding") and embed_type in (None, "auto") else None
    if emb_codes is not None and native_type(emb_codes, sym) is not None:
        kinds = (kinds[0], f"{native_type(emb_codes, sym)} (GPTQ codes)")
    else:
        emb_codes = None
    modules = dict(model.named_modules())
    for hf_name, tensor, module in _named_tensors(model, modules):
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd as the output when there is no output.weight
        gg_name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gg_name is None:
            raise ModelError(f"GGUF export: no GGUF name for tensor '{hf_name}'.")
        layer = int(hf_name.split(".")[2]) if hf_name.startswith("model.layers.") else None
        n_head = {"q_proj": heads[layer], "k_proj": kv[layer]}.get(hf_name.split(".")[-2]) if layer is not None \
            else None
        if emb_codes is not None and hf_name == "model.embed_tokens.weight":
            tensor, module = None, emb_codes
        data, qtype = _tensor_data(hf_name, tensor, module, gguf_type, kinds, n_head, sym, notes)
        writer.add_tensor(gg_name, data, raw_dtype=qtype)
        weights += module.in_features * module.out_features if module is not None else tensor.numel()
        data_bytes += data.nbytes
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
        if progress:
            progress()
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out_path)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        partial.unlink(missing_ok=True)
        raise
    size = out_path.stat().st_size
    return {"path": str(out_path), "arch": arch_name, "gguf_type": gguf_type, "tensor_types": counts,
            "embedding_type": kinds[1], "bytes": size, "weights": weights, "bits_per_weight": 8 * data_bytes / weights,
            "file_bits_per_weight": 8 * size / weights,
            "seconds": time.perf_counter() - t0, **notes}


def _named_tensors(model, modules):
    """(name, tensor or None, owning module) for every weight/bias, QuantLinear layers included."""
    for mod_name, module in modules.items():
        if isinstance(module, QuantLinear):
            yield f"{mod_name}.weight", None, module
            if module.bias is not None:
                yield f"{mod_name}.bias", module.bias.detach(), None
            continue
        for pname, p in module.named_parameters(recurse=False):
            yield f"{mod_name}.{pname}", p.detach(), None


def _tensor_data(hf_name, tensor, module, gguf_type, kinds, n_head, sym, notes):
    import gguf

    if module is not None:  # packed GPTQ layer
        native = native_type(module, sym)
        if gguf_type == "auto" and native is not None:
            row_perm = None
            if n_head is not None:  # permute rows of the codes exactly like the float rows
                row_perm = permute_rows(torch.arange(module.out_features), n_head)
            notes.setdefault("native_gptq_tensors", 0)
            notes["native_gptq_tensors"] += 1
            return gptq_blocks(module, native, row_perm), _qtype(native)
        tensor = module.dequantized()
    w = tensor.float()
    if n_head is not None and hf_name.endswith(".weight"):
        w = permute_rows(w, n_head)
    arr = w.cpu().numpy()
    if arr.ndim == 1:
        return arr.astype(np.float32), gguf.GGMLQuantizationType.F32
    kind = kinds[1] if hf_name in ("model.embed_tokens.weight", "lm_head.weight") else kinds[0]
    if kind == "f32":
        return arr.astype(np.float32), gguf.GGMLQuantizationType.F32
    if kind == "f16":
        return arr.astype(np.float16), gguf.GGMLQuantizationType.F16
    if kind == "bf16":
        return gguf.quants.quantize(arr, gguf.GGMLQuantizationType.BF16), gguf.GGMLQuantizationType.BF16
    if arr.shape[-1] % BLOCK:  # rows must be whole blocks; never widened to F16 behind the user's back
        raise ConfigError(f"GGUF export: tensor '{hf_name}' has rows of {arr.shape[-1]} values, not a multiple of "
                          f"{BLOCK}, so it cannot be stored as {kind}; choose --gguf-type f16 (or bf16/f32).")
    qtype = _qtype(kind)
    return gguf.quants.quantize(arr, qtype), qtype
