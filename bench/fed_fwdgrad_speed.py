"""How long a forward-gradient client request and a whole round take at bench/fed_quality.py's Dolly budget.

`client`: one client's request (16 directions, batch 2, SmolLM2 RMSNorm weights, 10 candidates against a
previous update), timed for the per-direction reference (`forward_gradient`: two forwards per direction,
FwdLLM's central difference) and for the batched jvp (`batched_forward_gradient`) at several chunk sizes.
`round`: one Flower-simulation round of 4 clients with the benchmark's settings (server evaluation off),
its wall time as Flower reports it. Results: bench/results/fed_quality/fwdgrad_speed.json.

    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/fed_fwdgrad_speed.py client round
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import fed_quality  # noqa: E402

OUT = fed_quality.OUT / "fwdgrad_speed.json"


def settings(**extra) -> dict:
    return {**fed_quality.DOLLY, **fed_quality.SETTINGS["dolly"]["fwdgrad"], "threads": 2, **extra}


def client() -> dict:
    import torch

    from edgeft.federated.config import FederatedConfig
    from edgeft.federated.session import setup_for
    from edgeft.methods.fwdgrad import batched_forward_gradient, forward_gradient

    cfg = FederatedConfig(**settings(out="/tmp/unused"))
    setup = setup_for(cfg, "client")
    setup.reset_to_w0()
    named = list(zip(setup.names, setup.params))
    num, batch = cfg.perturbations, setup.batches(0, 1, 1, cfg.batch_size)[0]
    reference = [torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for p in setup.params]
    out = {"perturbations": num, "batch": cfg.batch_size, "tuned_values": sum(p.numel() for p in setup.params),
           "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    forward_gradient(setup.params, lambda i: setup.loss_fn(setup.model, batch), num, cfg.fd_step,
                     torch.Generator().manual_seed(0), reference, cfg.candidates)
    out["per_direction_reference_s"] = time.perf_counter() - t0
    for chunk in (2, 4, 8):
        t0 = time.perf_counter()
        batched_forward_gradient(setup.model, named, setup.loss_fn, batch, num, torch.Generator().manual_seed(0),
                                 reference, cfg.candidates, chunk=chunk)
        out[f"batched_chunk{chunk}_s"] = time.perf_counter() - t0
    return out


def one_round() -> dict:
    from edgeft.federated.config import FederatedConfig
    from edgeft.federated.simulation import run_federated

    cfg = FederatedConfig(**settings(rounds=1, evaluate=False, out=str(ROOT / "runs" / "bench-fwdgrad-round")))
    import shutil

    shutil.rmtree(cfg.out, ignore_errors=True)
    t0 = time.perf_counter()
    s = run_federated(cfg)
    row = s["rounds"][-1]
    return {"round_s": row["seconds"], "clients": cfg.clients_per_round, "extra_requests": row.get("extra_requests"),
            "perturbations_pooled": row.get("perturbations"), "client_compute_s_mean": s["client_compute_s_mean"],
            "client_peak_memory_mb_max": s["client_peak_memory_mb_max"], "run_wall_s": time.perf_counter() - t0}


def main() -> None:
    import torch

    torch.set_num_threads(2)
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    for what in sys.argv[1:] or ["client", "round"]:
        result[what] = {"client": client, "round": one_round}[what]()
        print(what, json.dumps(result[what]), flush=True)
    result.update(machine=fed_quality.fed_dolly.MACHINE, date=time.strftime("%Y-%m-%d"),
                  command=fed_quality.fed_dolly.command())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
