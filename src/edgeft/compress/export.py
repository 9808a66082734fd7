"""`edgeft export`: the deployable files.

- safetensors: a plain Hugging Face folder (config, tokenizer, model.safetensors) any transformers
  install loads with from_pretrained; packed layers are dequantised, sparse layers stored dense.
- gguf: one file llama.cpp loads (gguf_export.py). With `check`, the file is loaded in llama.cpp and
  its perplexity on WikiText-2 windows (the same token ids), its greedy continuation of a prompt and
  its tokenizer are compared with the PyTorch model; the figures go to <file>.check.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from edgeft.compress.embedding_gptq import drop_code_buffers
from edgeft.compress.evaluation import lm_windows, perplexity_of_windows
from edgeft.compress.gguf_export import check_gguf_type, export_gguf
from edgeft.models.modules import set_module
from edgeft.compress.qlinear import QuantLinear
from edgeft.compress.source import Source, open_model
from edgeft.compress.store import check_out_parents, storage_dtype
from edgeft.errors import ConfigError, ModelError
from edgeft.paths import written_whole
from edgeft.train.rundir import MODEL_OWNED

FORMATS = ("gguf", "safetensors")
# what a safetensors export writes (MODEL_OWNED: also an earlier compress step's manifest and report, which would
# make the folder look like an edgeft compressed model) plus a sharded export's index
EXPORT_OWNED = (*MODEL_OWNED, "*.safetensors.index.json")
CHECK_PROMPT = "The history of the city begins in"
TOKENIZER_PROBE = ("Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring "
                   "role on the television series The Bill in 2000 ; naïve café — 3.14 , “quoted” text !")


def dense_copy(model: nn.Module) -> nn.Module:
    """Replace packed layers by ordinary nn.Linear holding the dequantised weight (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantLinear):
            lin = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            lin.weight.data.copy_(module.dequantized())
            if module.bias is not None:
                lin.bias.data.copy_(module.bias.detach())
            set_module(model, name, lin)
    if model.get_input_embeddings() is not None:
        drop_code_buffers(model.get_input_embeddings())
    return model


def export_safetensors(src: Source, out: Path, dtype: str = "float16") -> dict:
    if _non_uniform(src):
        raise ModelError("safetensors export: the blocks were pruned to different sizes, which a Hugging Face "
                         "config cannot describe. Keep the edgeft folder (edgeft compress output) or export GGUF "
                         "(llama.cpp's 'deci' architecture holds per-layer sizes).")
    if src.side_module is not None:
        raise ModelError("safetensors export: the adapter is kept as a side module and cannot be merged; "
                         "the base model would be exported without it.")
    model = dense_copy(src.backbone.model).to(storage_dtype(dtype))
    _set_bias_flags(model)
    model.config.dtype = dtype
    try:
        # save_pretrained writes straight into its folder; only the files an export writes are replaced, so the
        # user's own files in an --out folder stay (with --overwrite the whole folder used to be replaced)
        with written_whole(out, only=EXPORT_OWNED if out.is_dir() else None) as partial:
            model.save_pretrained(partial, safe_serialization=True)
            src.backbone.tokenizer.save_pretrained(partial)
    finally:
        model.to(torch.float32)
    weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return {"path": str(out), "format": "safetensors", "dtype": dtype, "bytes": weights}


def _set_bias_flags(model: nn.Module) -> None:
    """BitFit gives Llama blocks biases; the config must say so or from_pretrained would drop them."""
    if getattr(model.config, "model_type", None) != "llama":
        return
    layers = model.model.layers
    attn = {m.bias is not None for lay in layers for m in (lay.self_attn.q_proj, lay.self_attn.k_proj,
                                                            lay.self_attn.v_proj, lay.self_attn.o_proj)}
    mlp = {m.bias is not None for lay in layers for m in (lay.mlp.gate_proj, lay.mlp.up_proj, lay.mlp.down_proj)}
    if len(attn) > 1 or len(mlp) > 1:
        raise ModelError("safetensors export: only some of the blocks' layers have biases, which a Llama config "
                         "cannot describe; keep the edgeft folder instead.")
    model.config.attention_bias, model.config.mlp_bias = attn.pop(), mlp.pop()


def _non_uniform(src: Source) -> bool:
    model = src.backbone.model
    if not hasattr(model, "model") or not hasattr(model.model, "layers"):
        return False
    layers = model.model.layers
    sizes = {(lay.self_attn.q_proj.out_features, lay.self_attn.k_proj.out_features, lay.mlp.gate_proj.out_features)
             for lay in layers}
    return len(sizes) > 1


def check_gguf(path: Path, src: Source, windows: int = 8, seq_len: int = 512, new_tokens: int = 16,
               tasks: tuple[str, ...] = ("wikitext2",), torch_cache: dict | None = None) -> dict:
    """Compare the GGUF file in llama.cpp with the PyTorch model it came from (same token ids).

    torch_cache: pass the same dict when checking several exports of one model, so the PyTorch
    figures are computed once.
    """
    from edgeft.compress import llamacpp

    tok = src.backbone.tokenizer
    llm = llamacpp.load(path, n_ctx=seq_len)
    cache = torch_cache if torch_cache is not None else {}
    per_task = {}
    for task in tasks:
        wins = lm_windows(task, tok, seq_len, windows)
        key = (task, windows, seq_len)
        if key not in cache:
            t0 = time.perf_counter()
            cache[key] = (perplexity_of_windows(src.backbone.model, wins, batch_size=4), time.perf_counter() - t0)
        torch_ppl, torch_s = cache[key]
        cpp_ppl = llamacpp.perplexity(llm, wins)
        per_task[task] = {"torch_perplexity": torch_ppl["perplexity"], "llama_cpp_perplexity": cpp_ppl["perplexity"],
                          "relative_difference": cpp_ppl["perplexity"] / torch_ppl["perplexity"] - 1,
                          "eval_tokens": cpp_ppl["eval_tokens"], "windows": len(wins), "seq_len": seq_len,
                          "torch_seconds": torch_s, "llama_cpp_seconds": cpp_ppl["seconds"]}
    prompt = tok.encode(CHECK_PROMPT, add_special_tokens=False)
    if ("greedy", new_tokens) not in cache:
        with torch.no_grad():
            ids = torch.tensor([prompt])
            cache[("greedy", new_tokens)] = src.backbone.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
    hf = cache[("greedy", new_tokens)]
    cpp = llamacpp.greedy(llm, prompt, new_tokens)
    agree = 0
    for a, b in zip(hf, cpp):
        if a != b:
            break
        agree += 1
    first = per_task[tasks[0]]
    return {
        **first, "tasks": per_task,
        "prompt": CHECK_PROMPT, "torch_greedy": tok.decode(hf), "llama_cpp_greedy": tok.decode(cpp),
        "greedy_tokens_agreeing": agree, "greedy_tokens": len(hf),
        "tokenizer": llamacpp.tokenizer_agreement(llm, tok, TOKENIZER_PROBE),
    }


def _check_tasks(src: Source, tasks: tuple[str, ...]) -> tuple[str, ...]:
    """WikiText-2, plus the fine-tuning task when it is a language-modelling task (its text is scored too)."""
    from edgeft.data import TaskConfig, load_task

    note_task = (src.manifest.source.get("adapter_note") or {}).get("task")
    if note_task and note_task not in tasks:
        try:
            if load_task(TaskConfig(name=note_task, train_samples=1, dev_samples=1)).kind == "lm":
                return (*tasks, note_task)
        except (ConfigError, OSError):
            pass
    return tasks


def export_path(model: str, out: str | Path, fmt: str = "gguf", gguf_type: str = "auto") -> Path:
    """Where the export lands: the safetensors folder, or the .gguf file (a folder, even one named x.gguf, gets
    <model>-<type>.gguf: the file used to be renamed onto the folder once written, an IsADirectoryError)."""
    out = Path(out)
    if fmt == "safetensors" or (out.suffix == ".gguf" and not out.is_dir()):
        return out
    return out / f"{Path(model).name or 'model'}-{gguf_type}.gguf" if out.is_dir() or not out.suffix else out


def claim_export(model: str, adapter: str | None, out: str | Path, fmt: str = "gguf", gguf_type: str = "auto",
                 overwrite: bool = False) -> None:
    """Refuse an export onto its own input (it would replace the weights the folder's manifest describes) and,
    unless `overwrite`, onto an earlier file or a non-empty folder, as `compress` and `finetune` refuse theirs."""
    target = export_path(model, out, fmt, gguf_type).resolve()
    for name, given in (("--model", model), ("--adapter", adapter)):
        if given and Path(given).exists() and Path(given).resolve() in (target, *target.parents):
            raise ConfigError(f"{out}: the export would be written into its input ({name} {given}); "
                              "choose another --out.")
    check_out_parents(target)
    if overwrite:
        return
    if target.is_file() or (target.is_dir() and any(target.iterdir())):
        raise ConfigError(f"{target} already exists: pass --overwrite to replace it, or choose another --out.")


def export_model(model: str, out: str | Path, fmt: str = "gguf", gguf_type: str = "auto", adapter: str | None = None,
                 dtype: str = "float16", check: bool = False, check_windows: int = 8, seq_len: int = 512,
                 progress=None, check_tasks: tuple[str, ...] = ("wikitext2",), embed_type: str | None = None) -> dict:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'. Choose one of: {', '.join(FORMATS)}.")
    if fmt == "gguf":
        gguf_type = check_gguf_type(gguf_type)
    else:  # options that only shape a GGUF file would be dropped without a word
        given = [flag for flag, on in (("--gguf-type", gguf_type != "auto"), ("--embedding-type", embed_type),
                                       ("--check", check)) if on]
        if given:
            raise ConfigError(f"{', '.join(given)}: only for --format gguf; a safetensors export takes --dtype")
    if check and (check_windows < 1 or seq_len < 2):
        raise ConfigError(f"--check needs at least 1 window (--check-windows, given {check_windows}) of at least "
                          f"2 tokens (--seq-len, given {seq_len}) to measure perplexity")
    storage_dtype(dtype)
    if check:
        from edgeft.compress import llamacpp

        llamacpp.require()
    src = open_model(model, Path(adapter) if adapter else None)
    out = export_path(model, out, fmt, gguf_type)
    if fmt == "safetensors":
        return export_safetensors(src, out, dtype)
    return export_gguf_checked(src, out, gguf_type, check, check_windows, seq_len, check_tasks, progress,
                               embed_type=embed_type)


def export_gguf_checked(src: Source, out: Path, gguf_type: str, check: bool = False, check_windows: int = 8,
                        seq_len: int = 512, check_tasks: tuple[str, ...] = ("wikitext2",), progress=None,
                        torch_cache: dict | None = None, embed_type: str | None = None) -> dict:
    """Write one GGUF file from an opened model (+ the llama.cpp check); info also goes to <file>.json."""
    gguf_type = check_gguf_type(gguf_type)
    if src.side_module is not None:
        raise ModelError("GGUF export: the adapter is kept as a side network (it cannot be merged into the "
                         "weights); llama.cpp cannot run it. Export a LoRA/full/BitFit fine-tune instead.")
    info = export_gguf(src.backbone.model, src.backbone.tokenizer, out, gguf_type, src.manifest,
                       name=src.manifest.source.get("model", out.stem), progress=progress, embed_type=embed_type)
    info["source"] = src.manifest.source
    if check:
        info["check"] = check_gguf(out, src, check_windows, seq_len, tasks=_check_tasks(src, check_tasks),
                                   torch_cache=torch_cache)
    Path(str(out) + ".json").write_text(json.dumps(info, indent=2, default=str))
    return info
