"""One round of an algorithm on both engines, the same configuration: bytes per client-round and metrics.

edgeft.federated.local_grid.run_in_process (in process) against simulation.run_federated (Flower's simulation
engine, Ray). Prints a JSON line; bench/results/fed_quality/engine_vs_flower.json holds fedkseed, fwdgrad, fedit.

    PYTHONPATH=src flock /tmp/edgeft-cpu.lock .venv/bin/python bench/fed_engine_vs_flower.py fedkseed
"""

import json
import sys

import torch

from edgeft.federated.config import FederatedConfig
from edgeft.federated.local_grid import run_in_process
from edgeft.federated.simulation import run_federated


def main(algorithm: str) -> None:
    torch.set_num_threads(1)
    kw = dict(model="minilm-l6", task="sst2", clients=4, clients_per_round=2, rounds=1, partition="dirichlet",
              alpha=0.5, train_samples=200, eval_samples=20, max_length=32, eval_every=1, threads=1,
              algorithm=algorithm, local_steps=3, batch_size=4, zo_base="bitfit" if algorithm != "fedit" else "lora")
    out = {}
    for name, fn in (("inprocess", run_in_process), ("flower", run_federated)):
        s = fn(FederatedConfig(**kw, out=f"/tmp/fed-engine-{name}-{algorithm}"))
        out[name] = {"comm": s["communication"], "setup": s["setup_bytes"], "metrics": s["metric_by_round"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
