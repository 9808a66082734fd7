"""Accuracy on a GLUE task per round: FedIT (LoRA, backprop) and FwdLLM forward gradients (no backprop).

all-MiniLM-L6-v2 with a classification head on SST-2, Dirichlet(0.5) over labels; the server evaluates
dev accuracy after every round. Writes bench/results/federated/glue_<algorithm>.json/.png and
glue_summary.png.

    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/fed_glue.py
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
COMMON = dict(model="minilm-l6", task="sst2", clients=10, clients_per_round=3, rounds=6, partition="dirichlet",
              alpha=0.5, train_samples=3000, eval_samples=300, max_length=64, eval_batch_size=64, threads=1, seed=0,
              method_options={"r": 8})
SETTINGS = {
    "fedit": dict(algorithm="fedit", local_steps=10, batch_size=16, lr=1e-3),
    # FwdLLM tunes PEFT modules; BitFit (biases + the new classification head) keeps the dimension low.
    "fwdgrad": dict(algorithm="fwdgrad", zo_base="bitfit", method_options={}, perturbations=32, batch_size=16,
                    lr=5e-3, max_extra_requests=1),
}


def command() -> str:
    return " ".join([".venv/bin/python", *[a if " " not in a else repr(a) for a in sys.argv]])


def main() -> None:
    from edgeft.federated.config import FederatedConfig
    from edgeft.federated.simulation import run_federated

    ap = argparse.ArgumentParser()
    ap.add_argument("--algorithms", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = ap.parse_args()
    results = {}
    for name in args.algorithms:
        out = ROOT / "runs" / f"bench-fed-glue-{name}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = FederatedConfig(**{**COMMON, **SETTINGS[name], "out": str(out)})
        t0 = time.time()
        s = run_federated(cfg)
        s.update(bench_wall_s=time.time() - t0, date=time.strftime("%Y-%m-%d"), machine=MACHINE, command=command())
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"glue_{name}.json").write_text(json.dumps(s, indent=1))
        shutil.copy(out / "federated.png", OUT / f"glue_{name}.png")
        results[name] = s
        print(name, [(p["round"], round(p["accuracy"], 4)) for p in s["metric_by_round"]],
              "up", s["bytes_up_per_client_round"], flush=True)
    plot()


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name in SETTINGS:
        path = OUT / f"glue_{name}.json"
        if path.exists():
            pts = json.loads(path.read_text())["metric_by_round"]
            ax.plot([p["round"] for p in pts], [p["accuracy"] for p in pts], marker="o", label=name)
    ax.set(xlabel="round", ylabel="SST-2 dev accuracy", title="all-MiniLM-L6-v2, 10 clients, Dirichlet(0.5)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "glue_summary.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
