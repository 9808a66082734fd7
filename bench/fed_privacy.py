"""What Flower's privacy mods cost FedIT: bytes and time per client per round, SmolLM2-135M LoRA on Dolly.

Variants (one round, the same 3 clients, the same local work; server-side evaluation off so that the
round time is the protocol's): plain FedAvg, central DP with client-side clipping, local DP, SecAgg+,
SecAgg+ with local DP. Writes bench/results/federated/privacy_costs.json and .png.

    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/fed_privacy.py
"""

from __future__ import annotations

import argparse
import json
import sys
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fed_dolly  # noqa: E402  (one description of the machine for every federated benchmark)

MACHINE = fed_dolly.machine()  # EDGEFT_BENCH_MACHINE, or the cores
OUT = ROOT / "bench" / "results" / "federated"
BASE = dict(algorithm="fedit", model="smollm2-135m", task="dolly", clients=3, clients_per_round=3, rounds=1,
            local_steps=2, batch_size=2, max_length=96, partition="iid", evaluate=False, threads=2,
            method_options={"r": 8}, seed=0)
VARIANTS = {
    "plain": {},
    "dp-central": {"dp": "central", "dp_clip": 1.0, "dp_noise": 0.5},
    "dp-local": {"dp": "local", "dp_clip": 1.0, "dp_epsilon": 10.0},
    "secagg": {"secagg": True},
    "secagg+dp-local": {"secagg": True, "dp": "local", "dp_clip": 1.0, "dp_epsilon": 10.0},
}


def command() -> str:
    return " ".join([".venv/bin/python", *[a if " " not in a else repr(a) for a in sys.argv]])


def main() -> None:
    from edgeft.federated.config import FederatedConfig
    from edgeft.federated.simulation import run_federated

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=BASE["model"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    path = OUT / "privacy_costs.json"
    rows = json.loads(path.read_text())["variants"] if path.exists() else {}  # runs may be split (lock < 10 min)
    for name in args.variants:
        out = ROOT / "runs" / f"bench-fed-privacy-{name}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = FederatedConfig(**{**BASE, "model": args.model, **VARIANTS[name], "out": str(out)})
        t0 = time.time()
        s = run_federated(cfg)
        ledger = [r for r in json.loads((out / "ledger.json").read_text()) if r["round"] == 1]
        rows[name] = {
            "bytes_up_per_client": [r["bytes_up"] for r in ledger],
            "bytes_down_per_client": [r["bytes_down"] for r in ledger],
            "messages_per_client": [r["messages_down"] for r in ledger],
            "client_compute_s": [round(r["compute_s"], 2) for r in ledger],
            "round_s": s["rounds"][-1]["seconds"],
            "run_wall_s": time.time() - t0,
            "privacy": s.get("privacy"),
            "machine": MACHINE, "date": time.strftime("%Y-%m-%d"), "command": command(),
        }
        print(name, rows[name], flush=True)
    rows = {name: rows[name] for name in VARIANTS if name in rows}
    result = {"setting": {k: v for k, v in BASE.items() if k != "out"}, "variants": rows,
              "note": "each variant records the machine, date and command of its own run"}
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    plot(rows, OUT / "privacy_costs.png")


def plot(rows: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(rows)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    x = np.arange(len(names))
    a.bar(x - 0.2, [np.mean(rows[n]["bytes_down_per_client"]) / 1e6 for n in names], 0.4, label="down")
    a.bar(x + 0.2, [np.mean(rows[n]["bytes_up_per_client"]) / 1e6 for n in names], 0.4, label="up")
    a.set_xticks(x, names, rotation=15)
    a.set(ylabel="MB per client per round", title="FedIT (LoRA r=8) on the wire")
    a.legend()
    b.bar(x - 0.2, [rows[n]["round_s"] for n in names], 0.4, label="round (server wall)")
    b.bar(x + 0.2, [np.mean(rows[n]["client_compute_s"]) for n in names], 0.4, label="client compute (mean)")
    b.set_xticks(x, names, rotation=15)
    b.set(ylabel="seconds", title="time")
    b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
