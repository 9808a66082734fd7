"""`hybrid` throughput on 4 emulated equal devices against 1 device, first (pipeline) epoch and the
cached epoch. Devices are phone-class (2 GFLOP/s, 100 Mbit/s), slower than this host, so each
process is slowed by measured calibration and the four fit on the host's cores.

    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/runtime_scaling.py
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from edgeft.runtime.run import LaunchConfig, launch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "runtime"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (1, 4):
        devices = [f"eq-{i + 1}" for i in range(n)]
        cfg = LaunchConfig(cluster=str(ROOT / "bench" / "clusters_runtime" / "four-equal.yaml"), devices=devices,
                           model="minilm-l6", method="pac", strategy="hybrid",
                           # 64 = 4 steps of 16: epoch 2 then runs wholly on the cache; micro-batches: the planner's
                           task={"name": "sst2", "train_samples": 64, "dev_samples": 32, "max_length": 48, "seed": 0},
                           train={"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 4,
                                  "checkpoint_every": 100, "lr": 1e-3},
                           out=str(ROOT / "runs" / f"bench-scaling-{n}"), evaluate=False, link_mode="auto",
                           overwrite=True)
        m = launch(cfg, say=print)
        for e in m["epochs"]:
            rows.append({"devices": n, "epoch": e["epoch"], "measured_s": e["measured_s"],
                         "predicted_s": e["predicted_s"], "samples_per_s": e["samples_per_s"], "layout": m["layout"],
                         "link_mode": m["link_mode"], "host_gflops": m["host_calibration"]["host_flops"] / 1e9,
                         "slowdown": m["per_device"][0]["slowdown"]})
            print(json.dumps(rows[-1], default=str))
    speed = {}
    for ep in (1, 2):
        one = next(r for r in rows if r["devices"] == 1 and r["epoch"] == ep)
        four = next(r for r in rows if r["devices"] == 4 and r["epoch"] == ep)
        speed[f"epoch{ep}"] = four["samples_per_s"] / one["samples_per_s"]
    meta = {"machine": f"2-core CPU container ({platform.machine()})", "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "command": "flock /tmp/edgeft-cpu.lock .venv/bin/python bench/runtime_scaling.py"}
    (OUT / "scaling.json").write_text(json.dumps({"meta": meta, "rows": rows, "speedup": speed}, indent=2,
                                                 default=str))
    print("speed-up 4 vs 1 device:", {k: round(v, 2) for k, v in speed.items()})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for ep, marker in ((1, "o"), (2, "s")):
        pts = [(r["devices"], r["samples_per_s"]) for r in rows if r["epoch"] == ep]
        ax.plot(*zip(*pts), marker=marker, label=f"epoch {ep} ({'pipeline' if ep == 1 else 'cache'})")
    ax.plot([1, 4], [pts[0][1] * 0 + rows[0]["samples_per_s"], rows[0]["samples_per_s"] * 4], "k:", lw=1,
            label="linear (epoch 1)")
    ax.set(xlabel="emulated devices", ylabel="samples / s", title="hybrid (PAC), minilm-l6, sst2")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "scaling.png", dpi=110)


if __name__ == "__main__":
    main()
