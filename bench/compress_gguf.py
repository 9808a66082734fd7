"""A model fine-tuned by edgeft, exported to GGUF and run in llama.cpp: perplexity vs PyTorch, speed, size.

Steps (each its own short run under the CPU lock):
  --step finetune   LoRA on tinyshakespeare (edgeft finetune recipe) -> runs/compress-bench/ft-shakespeare
  --step export     merge + GGUF f16 / q8_0 / q4_0, each loaded in llama.cpp: WikiText-2 and Shakespeare
                    perplexity on the same token ids as PyTorch, greedy continuation, tokenizer agreement
  --step gptq       GPTQ 4-bit g32 of the fine-tuned model (calibrated on Shakespeare)
  --step gptq-export  -> GGUF "auto" (the GPTQ codes written as native Q4_1 blocks) -> llama.cpp vs the
                    packed PyTorch model
  --step speed      greedy decoding speed: PyTorch float32 vs llama.cpp f16 / q8_0 / q4_0 / GPTQ-Q4_1
  --summary         table + PNG + the acceptance check (f16 within 5%)
Results: bench/results/compress/gguf/*.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "compress" / "gguf"
RUNS = Path("runs/compress-bench")
FT = RUNS / "ft-shakespeare"
ADAPTER = FT / "adapter"
WINDOWS, SEQ = 12, 512
TYPES = ("f16", "q8_0", "q4_0")


def _save(name: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data.update(machine="2-core CPU container", date=time.strftime("%Y-%m-%d"), torch=torch.__version__)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=float))


def finetune() -> None:
    from edgeft.train.recipe import FinetuneConfig, run_finetune

    cfg = FinetuneConfig(model="smollm2-135m", method="lora",
                         task={"name": "shakespeare", "train_samples": 200, "dev_samples": 20, "max_length": 128},
                         train={"epochs": 1, "batch_size": 8, "lr": 1e-3, "eval_batch_size": 8}, out=str(FT),
                         overwrite=True)
    metrics = run_finetune(cfg)
    _save("finetune", {"command": "bench/compress_gguf.py --step finetune", "metrics": metrics})


def export() -> None:
    from edgeft.compress.export import export_gguf_checked
    from edgeft.compress.source import open_model

    out = {}
    src = open_model("smollm2-135m", ADAPTER)  # merged once; the PyTorch figures are computed once too
    cache: dict = {}
    for t in TYPES:
        info = export_gguf_checked(src, RUNS / f"ft-{t}.gguf", t, check=True, check_windows=WINDOWS, seq_len=SEQ,
                                   check_tasks=("wikitext2", "shakespeare"), torch_cache=cache)
        out[t] = info
        c = info["check"]
        print(t, f"{info['bytes'] / 1e6:.1f} MB", {k: (round(v["torch_perplexity"], 3),
                                                      round(v["llama_cpp_perplexity"], 3),
                                                      f"{100 * v['relative_difference']:+.2f}%")
                                                  for k, v in c["tasks"].items()}, flush=True)
    _save("export", {"command": "bench/compress_gguf.py --step export", "exports": out})


def gptq() -> None:
    from edgeft.compress.pipeline import CompressConfig, run_compress

    folder = RUNS / "ft-gptq4-g32"
    res = run_compress(CompressConfig(model="smollm2-135m", adapter=str(ADAPTER), method="gptq",
                                      options={"bits": 4, "group_size": 32, "sym": False, "embedding": False},
                                      out=str(folder), calib_task="shakespeare",
                                      calib_samples=16, calib_seq_len=512, eval_wikitext_windows=WINDOWS,
                                      eval_seq_len=SEQ, eval_task="shakespeare", eval_task_samples=WINDOWS,
                                      eval_before=False), log=lambda m: print(m, flush=True))
    _save("gptq", {"command": "bench/compress_gguf.py --step gptq", "records": res["records"]})


def gptq_export() -> None:
    from edgeft.compress.export import export_model

    info = export_model(str(RUNS / "ft-gptq4-g32"), RUNS / "ft-gptq4-g32-auto.gguf", "gguf", "auto", check=True,
                        check_windows=WINDOWS, seq_len=SEQ, check_tasks=("wikitext2", "shakespeare"))
    print({k: (round(v["torch_perplexity"], 3), round(v["llama_cpp_perplexity"], 3)) for k, v in
           info["check"]["tasks"].items()}, info["tensor_types"])
    _save("gptq_export", {"command": "bench/compress_gguf.py --step gptq-export", "export": info})


def speed() -> None:
    from edgeft.compress import llamacpp
    from edgeft.compress.export import CHECK_PROMPT
    from edgeft.compress.source import open_model

    new = 64
    src = open_model("smollm2-135m", ADAPTER)
    tok = src.backbone.tokenizer
    prompt = tok.encode(CHECK_PROMPT, add_special_tokens=False)
    ids = torch.tensor([prompt])
    out = {}
    with torch.no_grad():
        src.backbone.model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        g = src.backbone.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                        min_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id)
        dt = time.perf_counter() - t0
    out["pytorch-float32"] = {"tokens": g.shape[1] - len(prompt), "seconds": dt,
                              "tokens_per_s": (g.shape[1] - len(prompt)) / dt}
    from edgeft.compress.store import load_compressed

    for label, kernel in (("pytorch-gptq4-g32-dequant", False), ("pytorch-gptq4-g32-int4-kernel", True)):
        qmodel, _, _ = load_compressed(RUNS / "ft-gptq4-g32", int4_kernel=kernel)
        with torch.no_grad():
            qmodel.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
            t0 = time.perf_counter()
            g = qmodel.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                min_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id)
            dt = time.perf_counter() - t0
        out[label] = {"tokens": g.shape[1] - len(prompt), "seconds": dt, "tokens_per_s": (g.shape[1] - len(prompt)) / dt}
        print(label, f"{out[label]['tokens_per_s']:.1f} tok/s", flush=True)
    files = {t: RUNS / f"ft-{t}.gguf" for t in TYPES}
    files["gptq4-g32-q4_1"] = RUNS / "ft-gptq4-g32-auto.gguf"
    for name, path in files.items():
        llm = llamacpp.load(path, n_ctx=256, logits_all=False)
        llamacpp.greedy(llm, prompt, 4)  # warm-up
        t0 = time.perf_counter()
        toks = []
        for tok_id in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            toks.append(tok_id)
            if len(toks) >= new:
                break
        dt = time.perf_counter() - t0
        out[f"llama.cpp-{name}"] = {"tokens": len(toks), "seconds": dt, "tokens_per_s": len(toks) / dt,
                                    "file_mb": path.stat().st_size / 1e6}
        print(name, f"{len(toks) / dt:.1f} tok/s", flush=True)
    _save("speed", {"command": "bench/compress_gguf.py --step speed", "prompt_tokens": len(prompt),
                    "new_tokens": new, "threads": torch.get_num_threads(), "results": out})


def summary() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = json.loads((RESULTS / "export.json").read_text())["exports"]
    gq = json.loads((RESULTS / "gptq_export.json").read_text())["export"] if (RESULTS / "gptq_export.json").exists() \
        else None
    sp = json.loads((RESULTS / "speed.json").read_text())["results"] if (RESULTS / "speed.json").exists() else {}
    rows = [(t, ex[t]) for t in TYPES] + ([("gptq4-g32 (auto: Q4_1)", gq)] if gq else [])
    lines = ["| GGUF | size (MB) | WikiText-2 ppl PyTorch / llama.cpp | Shakespeare ppl PyTorch / llama.cpp | "
             "greedy agree | tokenizer identical |", "|---|---:|---:|---:|---:|---|"]
    for name, info in rows:
        c = info["check"]
        cells = []
        for task in ("wikitext2", "shakespeare"):
            v = c["tasks"].get(task)
            cells.append(f"{v['torch_perplexity']:.3f} / {v['llama_cpp_perplexity']:.3f} "
                         f"({100 * v['relative_difference']:+.2f}%)" if v else "–")
        lines.append(f"| {name} | {info['bytes'] / 1e6:.1f} | {cells[0]} | {cells[1]} | "
                     f"{c['greedy_tokens_agreeing']}/{c['greedy_tokens']} | {c['tokenizer']['identical']} |")
    if sp:
        lines += ["", "| decoder | tokens/s |", "|---|---:|"] + [f"| {k} | {v['tokens_per_s']:.1f} |"
                                                                 for k, v in sp.items()]
    f16 = ex["f16"]["check"]["tasks"]
    acceptance = {task: {"relative_difference": v["relative_difference"], "pass": abs(v["relative_difference"]) <= 0.05}
                  for task, v in f16.items()}
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "summary.json").write_text(json.dumps({"acceptance_f16_within_5pct": acceptance}, indent=2))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [n for n, _ in rows]
    for ax, task in zip(axes, ("wikitext2", "shakespeare")):
        tp = [i["check"]["tasks"][task]["torch_perplexity"] for _, i in rows]
        cp = [i["check"]["tasks"][task]["llama_cpp_perplexity"] for _, i in rows]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], tp, 0.4, label="PyTorch (float32 / packed GPTQ)")
        ax.bar([i + 0.2 for i in x], cp, 0.4, label="llama.cpp (GGUF)")
        ax.set_xticks(list(x), names, rotation=15, fontsize=8)
        ax.set_title(f"{task} perplexity, same tokens")
        ax.set_ylim(min(tp + cp) * 0.9, max(tp + cp) * 1.05)
    axes[0].legend(fontsize=8)
    fig.suptitle("Fine-tuned SmolLM2-135M (LoRA, Shakespeare) exported to GGUF")
    fig.tight_layout()
    fig.savefig(RESULTS / "summary.png", dpi=120)
    print("\n".join(lines))
    print(json.dumps(acceptance, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--step", choices=["finetune", "export", "gptq", "gptq-export", "speed"])
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    if a.step:
        {"finetune": finetune, "export": export, "gptq": gptq, "gptq-export": gptq_export, "speed": speed}[a.step]()
    if a.summary:
        summary()
