"""The loss/metric plot of a run (PNG next to metrics.json)."""

from __future__ import annotations

from pathlib import Path


def plot_run(events: list[dict], metric_name: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [(e["step"], e["loss"]) for e in events if e["event"] == "train_loss"]
    evals = [(e["epoch"], e["metrics"][metric_name]) for e in events
             if e["event"] == "eval" and metric_name in e.get("metrics", {})]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    if steps:
        ax1.plot(*zip(*steps), lw=1)
    ax1.set(xlabel="optimizer step", ylabel="training loss", title="loss")
    if evals:
        ax2.plot(*zip(*evals), marker="o")
    ax2.set(xlabel="epoch (0 = before training)", ylabel=metric_name, title=f"dev {metric_name}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
