"""Benchmark: CRUNCH on 100 devices x 30 blocks (target < 50 ms), plus dual ascent and the exact
bisection on the same instances. Writes bench/results/planner/crunch.json.
Run: PYTHONPATH=src .venv/bin/python bench/planner_crunch.py
"""

import json
import platform
import time
from pathlib import Path

import numpy as np

from edgeft.planner.crunch import crunch
from edgeft.planner.deft_problem import DeftInstance
from edgeft.planner.dual_ascent import dual_ascent, exact_joint

OUT = Path(__file__).resolve().parent / "results" / "planner" / "crunch.json"


def instance(rng, K=100, L=30) -> DeftInstance:
    c = np.cumsum(rng.uniform(0.5, 2, L)) * 1e11
    f = rng.uniform(1e10, 1e12, K)
    mem = 1e9 + np.cumsum(rng.uniform(1, 3, L)) * 1e8
    cap = rng.uniform(mem[0], mem[-1] * 1.3, K)
    return DeftInstance([f"d{k}" for k in range(K)], c[None, :] / f[:, None], mem, cap,
                        np.full(L, 8 * 2e6), rng.uniform(2e6, 2e8, K))


def main(reps: int = 20) -> None:
    rng = np.random.default_rng(0)
    insts = [instance(rng) for _ in range(reps)]
    lats = [inst.latency(np.full(inst.K, 1 / inst.L)) for inst in insts]
    crunch(lats[0])  # warm-up
    t_crunch = []
    for lat in lats:
        t0 = time.perf_counter()
        crunch(lat)
        t_crunch.append(time.perf_counter() - t0)
    t_da, t_ex, gaps = [], [], []
    for inst in insts[:5]:
        t0 = time.perf_counter()
        da = dual_ascent(inst)
        t_da.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ex = exact_joint(inst)
        t_ex.append(time.perf_counter() - t0)
        gaps.append(da.makespan / ex.makespan - 1)
    res = {
        "instance": "100 devices x 30 blocks, depth-monotone latency, memory limits",
        "crunch_ms": {"median": 1e3 * float(np.median(t_crunch)), "max": 1e3 * float(np.max(t_crunch)), "reps": reps},
        "dual_ascent_s": {"median": float(np.median(t_da)), "reps": len(t_da)},
        "exact_bisection_s": {"median": float(np.median(t_ex)), "reps": len(t_ex)},
        "dual_ascent_gap_to_exact": {"max": float(np.max(gaps)), "mean": float(np.mean(gaps))},
        "python": platform.python_version(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
