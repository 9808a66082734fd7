"""The run's summary (metrics.json) and its plot: metric per round, bytes per client per round, compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft.federated.accounting import Ledger
from edgeft.federated.config import FederatedConfig


def communication(ledger: Ledger, rounds: int) -> list[dict]:
    """Per training round: bytes each client sent and received, its compute time and peak memory."""
    out = []
    for rnd in range(1, rounds + 1):
        rows = [r for r in ledger.round_rows(rnd) if r.messages_down]
        done = [r for r in rows if r.status == "ok"]
        out.append({
            "round": rnd,
            "clients": len(rows),
            "completed": len(done),
            "dropped": [{"node": r.node, "partition": r.partition, "reason": r.reason} for r in rows
                        if r.status != "ok"],
            "bytes_up_per_client": [r.bytes_up for r in done],
            "bytes_down_per_client": [r.bytes_down for r in rows],
            "compute_s_per_client": [round(r.compute_s, 3) for r in done],
            "peak_memory_mb_per_client": [round(r.peak_memory_mb, 1) for r in done],
        })
    return out


def summarize(cfg: FederatedConfig, ledger: Ledger, rows: list[dict], metric_name: str, extra: dict) -> dict:
    comm = communication(ledger, cfg.rounds)
    evals = [(r["round"], r["metrics"][metric_name]) for r in rows if metric_name in r.get("metrics", {})]
    before = next((v for rnd, v in evals if rnd == 0), None)
    after = evals[-1][1] if evals and evals[-1][0] > 0 else None
    last_round = after
    chosen = extra.get("selected_metrics") or {}
    if metric_name in chosen:  # the run returns the round picked on the server's validation rows
        after = chosen[metric_name]
    ups = [b for c in comm for b in c["bytes_up_per_client"]]
    downs = [b for c in comm for b in c["bytes_down_per_client"]]
    setup_rows = ledger.round_rows(0)
    return {
        "algorithm": cfg.algorithm, "model": cfg.model, "task": cfg.task, "metric_name": metric_name,
        "metric_before": before, "metric_after": after, "metric_last_round": last_round,
        "metric_by_round": [{"round": rnd, metric_name: v} for rnd, v in evals],
        "rounds": rows,
        "communication": comm,
        "bytes_up_per_client_round": {"max": max(ups, default=0), "mean": float(np.mean(ups)) if ups else 0.0},
        "bytes_down_per_client_round": {"max": max(downs, default=0), "mean": float(np.mean(downs)) if downs else 0.0},
        "setup_bytes": {"down": sum(r.bytes_down for r in setup_rows), "up": sum(r.bytes_up for r in setup_rows)},
        "client_compute_s_mean": float(np.mean([t for c in comm for t in c["compute_s_per_client"]] or [0.0])),
        "client_peak_memory_mb_max": max([m for c in comm for m in c["peak_memory_mb_per_client"]], default=0.0),
        "dropped_clients": sum(len(c["dropped"]) for c in comm),
        "wall_s": sum(r["seconds"] for r in rows),
        "config": cfg.model_dump(),
        **extra,
    }


def plot(summary: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = summary["metric_name"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    pts = summary["metric_by_round"]
    if pts:
        axes[0].plot([p["round"] for p in pts], [p[name] for p in pts], marker="o")
    chosen = summary.get("selected_metrics") or {}
    if name in chosen:
        axes[0].plot([summary["selected_round"]], [chosen[name]], marker="*", markersize=14, linestyle="",
                     label=f"returned: round {summary['selected_round']} (lowest validation loss)")
        axes[0].legend(fontsize=8, loc="lower left")
    axes[0].set(xlabel="round (0 = before training)", ylabel=name, title=f"held-out {name}")
    comm = summary["communication"]
    rounds = [c["round"] for c in comm]
    up = [np.mean(c["bytes_up_per_client"]) if c["bytes_up_per_client"] else 0 for c in comm]
    down = [np.mean(c["bytes_down_per_client"]) if c["bytes_down_per_client"] else 0 for c in comm]
    width = 0.4
    axes[1].bar(np.array(rounds) - width / 2, down, width, label="down (server→client)")
    axes[1].bar(np.array(rounds) + width / 2, up, width, label="up (client→server)")
    axes[1].set_yscale("log")
    positive = [v for v in up + down if v > 0]
    if positive:
        axes[1].set_ylim(min(positive) / 4, max(positive) * 4)
    axes[1].set(xlabel="round", ylabel="bytes per client (mean)", title="communication on the wire")
    axes[1].legend(fontsize=8, loc="upper left", ncol=2)
    comp = [np.mean(c["compute_s_per_client"]) if c["compute_s_per_client"] else 0 for c in comm]
    axes[2].bar(rounds, comp)
    axes[2].set(xlabel="round", ylabel="seconds per client (mean)", title="client compute")
    fig.suptitle(f"{summary['algorithm']} · {summary['model']} · {summary['task']}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
