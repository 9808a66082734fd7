"""edgeft's GPTQ / SparseGPT GGUF exports against llama.cpp's own quantisers, all scored in llama.cpp.

Every file is scored by `compress.llamacpp.perplexity` on the SAME token ids (WikiText-2 test, the first
20 windows of 512 tokens, each from an empty context), with its size, its bits per weight over the number
of weights in its tensors (tensor data, as llama.cpp's "BPW", and the whole file, vocabulary included)
and llama.cpp's greedy generation speed. Model: SmolLM2-135M (edgeft's `smollm2-135m`).

Steps (each its own run; hold `flock /tmp/edgeft-cpu.lock` for --step eval, which times generation):
  --step f16        edgeft export of the float model as F16: the reference and llama.cpp's quantiser input
  --step llamacpp   llama_model_quantize (llama-cpp-python's low-level API): Q4_0 Q4_1 Q4_K_M Q5_0 Q8_0
  --step gptq       edgeft compress --method gptq with its defaults (4-bit, g32, symmetric, the tied embedding
                    GPTQ'd as the output layer) -> export auto: Q4_0 throughout
  --step embedding  the same GPTQ blocks with the float embedding rounded by gguf-py to Q4_0 / Q8_0 instead:
                    what GPTQ on the embedding adds, and what 8 bits there would give
  --step sparsegpt  edgeft compress --method sparsegpt --pattern 2:4 -> export q8_0 and q4_0 (ggml has no
                    sparse block type: the zeros are stored)
  --step eval       perplexity, size, bits per weight and tokens/s of every file made so far (files scored
                    before and unchanged since keep their figures)
  --summary         bench/results/compress/vs_llamacpp/summary.{json,md,png} + the acceptance check
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "compress" / "vs_llamacpp"
RUNS = Path("runs/compress-vs-llamacpp")
WINDOWS, SEQ, NEW_TOKENS = 20, 512, 64
LLAMA_CPP_TYPES = ("Q4_0", "Q4_1", "Q4_K_M", "Q5_0", "Q8_0")
ACCEPT_BPW = 4.6
OURS = "edgeft GPTQ defaults (auto: Q4_0 throughout)"


def files() -> dict[str, tuple[str, Path]]:
    """label -> (who made it, path), for every variant this benchmark knows; the acceptance's three first."""
    out = {"f16": ("edgeft export", RUNS / "f16.gguf"), "llama.cpp Q4_0": ("llama.cpp", RUNS / "llamacpp-q4_0.gguf"),
           OURS: ("edgeft", RUNS / "gptq-auto.gguf")}
    out.update({f"llama.cpp {t}": ("llama.cpp", RUNS / f"llamacpp-{t.lower()}.gguf") for t in LLAMA_CPP_TYPES})
    out["edgeft GPTQ blocks Q4_0, embedding rounded to Q4_0"] = ("edgeft", RUNS / "gptq-emb-q4_0.gguf")
    out["edgeft GPTQ blocks Q4_0, embedding rounded to Q8_0"] = ("edgeft", RUNS / "gptq-emb-q8_0.gguf")
    out["edgeft SparseGPT 2:4 (Q8_0)"] = ("edgeft", RUNS / "sparsegpt24-q8_0.gguf")
    out["edgeft SparseGPT 2:4 (Q4_0, embedding Q8_0)"] = ("edgeft", RUNS / "sparsegpt24-q4_0.gguf")
    return out


def f16() -> None:
    from edgeft.compress.export import export_model

    info = export_model("smollm2-135m", RUNS / "f16.gguf", "gguf", "f16")
    print(f"f16: {info['bytes'] / 1e6:.1f} MB, {info['bits_per_weight']:.2f} bits/weight")


def llamacpp_quantise() -> None:
    import llama_cpp

    src = RUNS / "f16.gguf"
    if not src.is_file():
        raise SystemExit(f"{src}: run --step f16 first")
    for t in LLAMA_CPP_TYPES:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{t}")
        params.nthread = os.cpu_count() or 1
        out = RUNS / f"llamacpp-{t.lower()}.gguf"
        t0 = time.perf_counter()
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
        if rc != 0:
            raise SystemExit(f"llama_model_quantize {t} failed (return code {rc})")
        print(f"{t}: {out.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", flush=True)


def _compress(method: str, options: dict, out: Path) -> dict:
    from edgeft.compress.pipeline import CompressConfig, run_compress

    res = run_compress(CompressConfig(model="smollm2-135m", method=method, options=options, out=str(out),
                                      eval_wikitext_windows=0, eval_before=False, eval_task="none"),
                       log=lambda m: print(m, flush=True))
    return res["records"][-1]


def gptq() -> None:
    from edgeft.compress.export import export_model

    folder = RUNS / "gptq"
    record = _compress("gptq", {}, folder)  # the defaults, as the README's quickstart runs them
    exports = {"auto": export_model(str(folder), RUNS / "gptq-auto.gguf")}
    _save("gptq", {"command": "bench/compress_vs_llamacpp.py --step gptq", "compress": record, "exports": exports})


def embedding() -> None:
    from safetensors.torch import load_file

    from edgeft.compress.embedding_gptq import drop_code_buffers
    from edgeft.compress.gguf_export import export_gguf
    from edgeft.compress.source import open_model
    from edgeft.models.backbone import resolve

    src = open_model(str(RUNS / "gptq"))
    model = src.backbone.model
    float_emb = load_file(str(Path(resolve("smollm2-135m")[0]) / "model.safetensors"))["model.embed_tokens.weight"]
    emb = model.get_input_embeddings()
    drop_code_buffers(emb)
    emb.weight.data.copy_(float_emb)
    src.manifest.quantized["embedding"] = False
    exports = {t: export_gguf(model, src.backbone.tokenizer, RUNS / f"gptq-emb-{t}.gguf", "auto", src.manifest,
                              embed_type=t) for t in ("q4_0", "q8_0")}
    _save("embedding", {"command": "bench/compress_vs_llamacpp.py --step embedding", "exports": exports})


def sparsegpt() -> None:
    from edgeft.compress.export import export_model

    folder = RUNS / "sparsegpt24"
    record = _compress("sparsegpt", {"pattern": "2:4"}, folder)
    exports = {t: export_model(str(folder), RUNS / f"sparsegpt24-{t}.gguf", "gguf", t) for t in ("q8_0", "q4_0")}
    _save("sparsegpt", {"command": "bench/compress_vs_llamacpp.py --step sparsegpt", "compress": record,
                        "exports": exports})


def gguf_tensors(path: Path) -> tuple[int, int, dict[str, int]]:
    """(weights: elements of all tensors, bytes of tensor data, tensor count per type) of a GGUF file."""
    import gguf
    import numpy as np

    weights = data = 0
    types: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        weights += int(np.prod(t.shape))
        data += int(t.n_bytes)
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return weights, data, types


def evaluate(only: list[str] | None = None) -> None:
    from transformers import AutoTokenizer

    from edgeft.compress import llamacpp
    from edgeft.compress.evaluation import lm_windows
    from edgeft.compress.export import CHECK_PROMPT
    from edgeft.models.backbone import resolve

    tok = AutoTokenizer.from_pretrained(resolve("smollm2-135m")[0])
    wins = lm_windows("wikitext2", tok, SEQ, WINDOWS)
    prompt = tok.encode(CHECK_PROMPT, add_special_tokens=False)
    done = json.loads((RESULTS / "eval.json").read_text())["results"] if (RESULTS / "eval.json").is_file() else {}
    out = {}
    for label, (maker, path) in files().items():
        if not path.is_file():
            print(f"skip {label}: {path} not made yet", flush=True)
            continue
        if label in done and done[label]["mtime"] == path.stat().st_mtime:  # scored already, file unchanged
            out[label] = done[label]
            continue
        if only and not any(o in label for o in only):
            continue
        ppl = llamacpp.perplexity(llamacpp.load(path, n_ctx=SEQ), wins)
        llm = llamacpp.load(path, n_ctx=256, logits_all=False)
        llamacpp.greedy(llm, prompt, 4)  # warm-up
        t0 = time.perf_counter()
        n = len(llamacpp.greedy(llm, prompt, NEW_TOKENS))
        dt = time.perf_counter() - t0
        size = path.stat().st_size
        weights, data, types = gguf_tensors(path)
        out[label] = {"maker": maker, "file": str(path), "mtime": path.stat().st_mtime, "bytes": size,
                      "weights": weights, "date": time.strftime("%Y-%m-%d %H:%M"),
                      "bits_per_weight": 8 * data / weights, "file_bits_per_weight": 8 * size / weights,
                      "perplexity": ppl["perplexity"], "eval_tokens": ppl["eval_tokens"], "tokens_per_s": n / dt,
                      "generated_tokens": n, "tensor_types": types}
        print(f"{label}: ppl {ppl['perplexity']:.3f}  {size / 1e6:.1f} MB  {8 * data / weights:.2f} bpw  "
              f"{n / dt:.1f} tok/s", flush=True)
        _save_eval({**done, **out})  # after every file: a long run stopped midway keeps what it measured


def _save_eval(results: dict) -> None:
    import llama_cpp

    _save("eval", {"command": "flock /tmp/edgeft-cpu.lock .venv/bin/python bench/compress_vs_llamacpp.py --step eval",
                   "windows": WINDOWS, "seq_len": SEQ, "threads": os.cpu_count(), "new_tokens": NEW_TOKENS,
                   "llama_cpp_python": llama_cpp.__version__, "results": results})


def _save(name: str, data: dict) -> None:
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    data.update(machine="2-core CPU container", date=time.strftime("%Y-%m-%d"), torch=torch.__version__)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))


def summary() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = json.loads((RESULTS / "eval.json").read_text())
    res = ev["results"]
    ref = res["f16"]["perplexity"]
    lines = ["| GGUF | size (MB) | bits/weight: tensors / file | WikiText-2 ppl (llama.cpp) | vs f16 | tokens/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, r in sorted(res.items(), key=lambda kv: kv[1]["bytes"]):
        lines.append(f"| {label} | {r['bytes'] / 1e6:.1f} | {r['bits_per_weight']:.2f} / "
                     f"{r['file_bits_per_weight']:.2f} | {r['perplexity']:.3f} | "
                     f"{100 * (r['perplexity'] / ref - 1):+.1f}% | {r['tokens_per_s']:.1f} |")
    q40 = res.get("llama.cpp Q4_0")
    ours = res.get(OURS)
    acceptance = None
    if q40 and ours:
        acceptance = {"bits_per_weight": ours["bits_per_weight"], "bpw_ok": ours["bits_per_weight"] <= ACCEPT_BPW,
                      "file_bits_per_weight": ours["file_bits_per_weight"],
                      "file_bpw_ok": ours["file_bits_per_weight"] <= ACCEPT_BPW,
                      "perplexity": ours["perplexity"], "llama_cpp_q4_0_perplexity": q40["perplexity"],
                      "size_ok": ours["bytes"] <= q40["bytes"], "beats_q4_0": ours["perplexity"] < q40["perplexity"],
                      "vs_f16": ours["perplexity"] / ref - 1, "within_5pct_of_f16": ours["perplexity"] <= 1.05 * ref}
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "summary.json").write_text(json.dumps({"acceptance": acceptance, "date": ev["date"],
                                                      "machine": ev["machine"]}, indent=2))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, r in res.items():
        color = {"llama.cpp": "tab:blue", "edgeft": "tab:red"}.get(r["maker"], "black")
        ax.scatter(r["bytes"] / 1e6, r["perplexity"], color=color)
        ax.annotate(label.replace("edgeft ", "").replace("llama.cpp ", ""), (r["bytes"] / 1e6, r["perplexity"]),
                    fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.axhline(ref, color="gray", lw=0.8, ls="--")
    ax.axhline(1.05 * ref, color="gray", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("GGUF file size (MB)")
    ax.set_ylabel(f"WikiText-2 perplexity in llama.cpp ({WINDOWS} x {SEQ} tokens)")
    ax.set_title("SmolLM2-135M: edgeft (red) vs llama.cpp's quantisers (blue); dashed: f16, dotted: +5%")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(RESULTS / "summary.png", dpi=120)
    print("\n".join(lines))
    print(json.dumps(acceptance, indent=2))


STEPS = {"f16": f16, "llamacpp": llamacpp_quantise, "gptq": gptq, "embedding": embedding, "sparsegpt": sparsegpt,
         "eval": evaluate}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step", choices=list(STEPS), help="one step (see above)")
    parser.add_argument("--summary", action="store_true", help="table, plot and acceptance from eval.json")
    parser.add_argument("--only", action="append", help="eval: only the variants whose label contains this")
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.step == "eval":
        evaluate(args.only)
    elif args.step:
        STEPS[args.step]()
    if args.summary:
        summary()
