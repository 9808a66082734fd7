"""h21: LoRA on chosen blocks against LoRA on all and PAC, one figure (reads the quality reports next to it).

python bench/results/h21_device/depth_plot.py   ->  bench/results/quality/h21_lora_depth.png
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Q = Path(__file__).resolve().parents[1] / "quality"
SETS = [("top2", "top 2"), ("top6", "top 6"), ("top10", "top 10"), ("bottom4", "bottom 4"), ("bottom10", "bottom 10"),
        ("bottom20", "bottom 20"), ("all", "all 30")]


def cell(path: Path, model: str, task: str, entry: str) -> tuple[float, float]:
    r = json.loads(path.read_text())["table"][model][task][entry]
    return 100 * r["mean"], 100 * r["std"]


def main() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, task, name in zip(axes, ("sst2", "rte"), ("SST-2", "RTE")):
        vals = [cell(Q / f"h21_lora_{k}_smollm2_holdout_gpu.json", "smollm2-135m", task, "lora") for k, _ in SETS]
        colors = ["#aec7e8" if k.startswith("top") else "#1f77b4" for k, _ in SETS]
        ax.bar([lab for _, lab in SETS], [m for m, _ in vals], yerr=[s for _, s in vals], color=colors, capsize=3)
        pac, _ = cell(Q / "h21_sweep_smollm2_holdout_gpu.json", "smollm2-135m", task, "pac:base")
        ax.axhline(pac, color="#2ca02c", lw=2, label=f"PAC, today's defaults ({pac:.1f})")
        lo = min(min(m for m, _ in vals), pac)
        ax.set_ylim(lo - 5, max(m for m, _ in vals) + 3)
        ax.set_title(f"SmolLM2-135M, {name}: LoRA on which blocks")
        ax.set_ylabel("accuracy x100 (mean ± std, 3 seeds)")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("h21: LoRA's lead needs the lower blocks (one H100, 2026-12-06; 500 held-out training rows)", fontsize=10)
    fig.tight_layout()
    out = Q / "h21_lora_depth.png"
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
