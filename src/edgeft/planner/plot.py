"""Placement and timeline pictures of a plan (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from edgeft.planner.plan import Plan  # noqa: E402
from edgeft.planner.strategies import get  # noqa: E402


def plot_placement(plan: Plan, path: str | Path) -> Path:
    """Which layers each device runs (a bar per device over the layer axis)."""
    tasks, entry = plan.tasks, get(plan.strategy)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(tasks) + 1.5))
    cmap = plt.get_cmap("tab20")
    for y, t in enumerate(tasks):
        if t.layers and t.layers[1] > t.layers[0]:
            c = cmap((t.stage if t.stage is not None else y) % 20)
            ax.barh(y, t.layers[1] - t.layers[0], left=t.layers[0], color=c, edgecolor="black")
            ax.text(t.layers[1] + 0.2, y, entry.placement_label(t), va="center", fontsize=7)
    ax.set_yticks(range(len(tasks)), [t.device for t in tasks], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("transformer layer (0 = input side)")
    ax.set_title(f"{plan.strategy} placement: {plan.model} ({plan.method}) on {plan.cluster}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_timeline(plan: Plan, path: str | Path) -> Path:
    """Hybrid: the simulated 1F1B schedule per stage; deft/split: compute and upload per device."""
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(len(plan.stages), len(plan.tasks)) + 1.5))
    entry = get(plan.strategy)
    if entry.pipeline_timeline and plan.timeline:
        for e in plan.timeline:
            color = "tab:blue" if e["op"] == "F" else "tab:orange"
            ax.barh(e["stage"], e["end"] - e["start"], left=e["start"], color=color, edgecolor="white")
            ax.text((e["start"] + e["end"]) / 2, e["stage"], f"{e['op']}{e['micro_batch']}", ha="center",
                    va="center", fontsize=6, color="white")
        ax.set_yticks(range(len(plan.stages)), [f"stage {i}: {', '.join(s['devices'])}" for i, s in enumerate(plan.stages)],
                      fontsize=7)
        ax.set_xlabel("seconds within one iteration (blue forward, orange backward)")
    else:
        active = [t for t in plan.tasks if t.role != "idle"]
        for y, t in enumerate(active):
            ax.barh(y, t.compute_s, color="tab:blue", label="compute" if y == 0 else None)
            ax.barh(y, t.comm_s, left=t.compute_s, color="tab:green", label="upload" if y == 0 else None)
        ax.set_yticks(range(len(active)), [t.device for t in active], fontsize=7)
        if entry.makespan_line:
            ax.axvline(plan.predicted["time_s"], color="red", ls="--", label="round makespan")
        ax.legend(fontsize=7)
        ax.set_xlabel("seconds per " + str(plan.predicted.get("time_unit", "round")))
    ax.invert_yaxis()
    ax.set_title(f"{plan.strategy} timeline: predicted {plan.predicted['time_s']:.3g} s per "
                 f"{plan.predicted.get('time_unit', '')}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
