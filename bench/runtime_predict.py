"""Planner prediction vs measured time per epoch, per strategy, on the example clusters.

Each case is one `edgeft launch` (real processes, gloo, link emulation, device slowdown by measured
calibration, time dilation where the cluster's devices are faster than this host). Writes
bench/results/runtime/predict.json, predict.png and predict.md.

    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/runtime_predict.py [--only hybrid]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from edgeft.runtime.run import LaunchConfig, launch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "runtime"
# 32 examples = 4 steps of 8: each epoch is the whole training set, so PAC's second epoch really runs
# on the cache (with 64 examples cut to 4 steps, half of epoch 2's samples were never cached).
TASK = {"name": "sst2", "train_samples": 32, "dev_samples": 32, "max_length": 48, "seed": 0}

CASES = [
    # strategy, cluster, devices, method, extra train keys
    ("hybrid", "examples/clusters/home-lab.yaml", ["phone-a", "phone-b", "phone-c"], "pac",
     {"epochs": 2, "batch_size": 8, "micro_batches": 2, "max_steps_per_epoch": 4}),
    ("deft", "examples/clusters/classroom-deft.yaml", ["phone-1", "phone-2", "phone-3"], "lora",
     {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 4}),
    ("split", "examples/clusters/home-lab.yaml", ["phone-a", "phone-b"], "lora",
     {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 4}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--steps", type=int, default=16, help="steps per epoch (the task gets 8 x steps examples)")
    args = ap.parse_args()
    task = {**TASK, "train_samples": 8 * args.steps}
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for strategy, cluster, devices, method, train in CASES:
        if args.only and strategy != args.only:
            continue
        out = ROOT / "runs" / f"bench-predict-{strategy}"
        cfg = LaunchConfig(cluster=str(ROOT / cluster), devices=devices, model=args.model, task=task, method=method,
                           strategy=strategy, train={"lr": 1e-3, "checkpoint_every": 100, **train,
                                                     "max_steps_per_epoch": args.steps}, out=str(out),
                           time_scale="auto", evaluate=False, link_mode="auto", overwrite=True)
        t0 = time.time()
        m = launch(cfg, say=print)
        for e in m["epochs"]:
            rows.append({"strategy": strategy, "cluster": Path(cluster).stem, "devices": m["devices"],
                         "method": method, "model": args.model, "epoch": e["epoch"], "predicted_s": e["predicted_s"],
                         "plan_s": e.get("plan_s"),
                         "measured_s": e["measured_s"], "error": e["error"], "time_scale": m["time_scale"],
                         "link_mode": m["link_mode"], "layout": m["layout"],
                         "slowdowns": {d["name"]: d["slowdown"] for d in m["per_device"]},
                         "link_wait_s": {d["name"]: d["link_wait_s"] for d in m["per_device"]},
                         "host_gflops": m["host_calibration"].get("host_flops", 0) / 1e9,
                         "calibration": m["host_calibration"], "wall_s": time.time() - t0})
        print(json.dumps(rows[-1], default=str)[:400])
    meta = {"machine": f"{platform.machine()} {torch.get_num_threads()} threads (2-core CPU container)",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "command": "flock /tmp/edgeft-cpu.lock .venv/bin/python bench/runtime_predict.py"}
    name = f"predict{'-' + args.only if args.only else ''}"
    (OUT / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    lines = ["| strategy | cluster (devices) | method | epoch | plan for the real cluster s | predicted (emulated) s "
             "| measured s | error | time scale | host GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        err = f"{r['error']:+.0%}" if r["error"] is not None else "-"
        lines.append(f"| {r['strategy']} | {r['cluster']} ({', '.join(r['devices'])}) | {r['method']} | {r['epoch']} | "
                     f"{r['plan_s']:.2f} | {r['predicted_s']:.2f} | {r['measured_s']:.2f} | {err} | {r['time_scale']:.1f} | {r['host_gflops']:.1f} |")
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = [f"{r['strategy']} e{r['epoch']}" for r in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["predicted_s"] for r in rows], 0.4, label="planner prediction")
    ax.bar([i + 0.2 for i in x], [r["measured_s"] for r in rows], 0.4, label="measured")
    ax.set_xticks(list(x), labels)
    ax.set(ylabel="seconds per epoch (dilated)", title="prediction vs measurement")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=110)


if __name__ == "__main__":
    main()
