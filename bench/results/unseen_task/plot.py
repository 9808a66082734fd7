"""Bar chart of dolly_category_minilm_cpu.json: each method's dev accuracy per seed and its mean."""
import json
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = Path(__file__).parent
r = json.loads((here / "dolly_category_minilm_cpu.json").read_text())
fig, ax = plt.subplots(figsize=(5, 3.2))
for i, (m, v) in enumerate(r["runs"].items()):
    label = f"{m}: {v['mean']:.1f} ± {v['std']:.1f}"
    ax.bar(i, v["mean"], yerr=v["std"], color=f"C{i}", alpha=0.6, capsize=6, label=label)
    ax.plot([i] * len(v["seeds"]), [s["dev_accuracy"] * 100 for s in v["seeds"]], "k.")
ax.set_xticks(range(len(r["runs"])), list(r["runs"]))
ax.set_ylim(50, 66)
ax.set_ylabel("dev accuracy (%)")
ax.set_title("Dolly category (8 classes), MiniLM-L6, 3 seeds")
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
fig.savefig(here / "dolly_category_minilm_cpu.png", dpi=120)
