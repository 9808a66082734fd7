"""The whole deployment chain on the fine-tuned model: merge -> structured prune -> GKD distil -> GPTQ -> GGUF.

The teacher is SmolLM2-135M + the LoRA adapter of bench/compress_gguf.py --step finetune (Shakespeare).
Every step is one short run under the CPU lock and reads the previous step's folder; each folder's
compress_report.json carries the chain's figures (size, WikiText-2 and Shakespeare perplexity, time).

  flock /tmp/edgeft-cpu.lock .venv/bin/python bench/compress_distill.py --step prune
  flock /tmp/edgeft-cpu.lock .venv/bin/python bench/compress_distill.py --step distill
  flock /tmp/edgeft-cpu.lock .venv/bin/python bench/compress_distill.py --step gptq
  flock /tmp/edgeft-cpu.lock .venv/bin/python bench/compress_distill.py --step export
  .venv/bin/python bench/compress_distill.py --summary
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "compress" / "chain"
RUNS = Path("runs/compress-bench")
ADAPTER = RUNS / "ft-shakespeare" / "adapter"
EVAL = dict(eval_wikitext_windows=16, eval_seq_len=512, eval_task="shakespeare", eval_task_samples=16, seed=0)
RATIO = 0.2
STEPS = 60


def _run(**kw):
    from edgeft.compress.pipeline import CompressConfig, run_compress

    t0 = time.perf_counter()
    res = run_compress(CompressConfig(**{**EVAL, **kw}), log=lambda m: print(m, flush=True))
    res["wall_seconds"] = time.perf_counter() - t0
    return res


def _save(name, res, command):
    RESULTS.mkdir(parents=True, exist_ok=True)
    res.update(command=command, machine="2-core CPU container", date=time.strftime("%Y-%m-%d"),
               torch=torch.__version__)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2, default=float))
    for r in res.get("records", []):
        print(f"{r['label']:<28} {(r['size_bytes'] or 0) / 1e6:8.1f} MB  wt2 {r['wikitext2_ppl'] or 0:8.3f}  "
              f"{r['task'] or ''} {r['task_metric'] or 0:8.3f}  {r['compress_seconds'] or 0:6.1f}s")


def step(name: str) -> None:
    cmd = f"flock /tmp/edgeft-cpu.lock .venv/bin/python bench/compress_distill.py --step {name}"
    if name == "prune":
        res = _run(model="smollm2-135m", adapter=str(ADAPTER), method="prune", options={"ratio": RATIO},
                   calib_task="shakespeare", calib_samples=16, calib_seq_len=256, out=str(RUNS / "chain-pruned"))
    elif name == "distill":
        res = _run(model=str(RUNS / "chain-pruned"), method="distill", calib_task="shakespeare",
                   options={"teacher": "smollm2-135m", "teacher_adapter": str(ADAPTER), "steps": STEPS,
                            "batch_size": 4, "lr": 5e-5, "max_new_tokens": 64, "prompt_len": 64, "pairs": 256},
                   out=str(RUNS / "chain-distilled"))
    elif name == "gptq":
        res = _run(model=str(RUNS / "chain-distilled"), method="gptq",
                   options={"bits": 4, "group_size": 32, "sym": False, "embedding": False},  # as measured (Q4_1)
                   calib_task="shakespeare", calib_samples=32, calib_seq_len=512, out=str(RUNS / "chain-gptq"))
    elif name == "export":
        from edgeft.compress.export import export_model

        info = export_model(str(RUNS / "chain-gptq"), RUNS / "chain-gptq-auto.gguf", "gguf", "auto", check=True,
                            check_windows=16, seq_len=512, check_tasks=("wikitext2", "shakespeare"))
        res = {"export": info}
        print(info["arch"], info["tensor_types"], {k: (round(v["torch_perplexity"], 3),
                                                        round(v["llama_cpp_perplexity"], 3))
                                                    for k, v in info["check"]["tasks"].items()})
    else:
        raise SystemExit(name)
    _save(name, res, cmd)


def summary() -> None:
    gptq = json.loads((RESULTS / "gptq.json").read_text())
    shutil.copy(Path(gptq["out"]) / "compress_report.png", RESULTS / "chain.png")
    rows = gptq["records"]
    lines = ["| step | size (MB) | params (M) | WikiText-2 ppl | Shakespeare ppl | time (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['size_bytes'] / 1e6:.1f} | {r['params'] / 1e6:.1f} | "
                     f"{r['wikitext2_ppl']:.3f} | {r['task_metric']:.3f} | {r['compress_seconds'] or 0:.0f} |")
    if (RESULTS / "export.json").exists():
        e = json.loads((RESULTS / "export.json").read_text())["export"]
        t = e["check"]["tasks"]
        lines.append(f"| GGUF ({e['arch']}, GPTQ codes as Q4_1) in llama.cpp | {e['bytes'] / 1e6:.1f} | – | "
                     f"{t['wikitext2']['llama_cpp_perplexity']:.3f} | {t['shakespeare']['llama_cpp_perplexity']:.3f} | "
                     f"{e['seconds']:.0f} |")
    distill = json.loads((RESULTS / "distill.json").read_text())["records"][-1]["extra"]["distill"]
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    losses = distill["losses"]
    ax.plot(range(1, len(losses) + 1), losses, color="#999", lw=0.8, label="per step")
    k = 10
    smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
    ax.plot(range(1, len(losses) + 1), smooth, color="#c44e52", label=f"mean of last {k}")
    on = [i + 1 for i, o in enumerate(distill["on_policy"]) if o]
    ax.scatter(on, [losses[i - 1] for i in on], s=8, color="#4c72b0", label="on-policy batch", zorder=3)
    ax.set_xlabel("GKD step")
    ax.set_ylabel("generalized JSD (beta 0.5)")
    ax.legend(fontsize=8)
    ax.set_title("GKD: pruned student <- fine-tuned teacher")
    fig.tight_layout()
    fig.savefig(RESULTS / "distill_loss.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--step", choices=["prune", "distill", "gptq", "export"])
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    if a.step:
        step(a.step)
    if a.summary:
        summary()
