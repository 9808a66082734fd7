"""Figures for docs/benchmarks_planner.md: the split solver against its baselines (users sweep,
weight sweeps, convergence, energy/delay split) and DEFT round latency against baselines on the
example clusters. Writes docs/img/planner_*.png and bench/results/planner/figures.json.
Run: PYTHONPATH=src .venv/bin/python bench/planner_figures.py [--only users_sweep,convergence,...]
(--only reruns the named steps and keeps the other steps' results in figures.json)
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edgeft.planner import Workload, load_cluster, make_plan, resolve_arch  # noqa: E402
from edgeft.planner.split_model import (  # noqa: E402
    SplitSettings, build_split_instance, objective, random_instance, totals,
)
from edgeft.planner.split_solver import (  # noqa: E402
    BASELINES, best_integer_alpha, greedy_association, initial_point, solve_split,
)

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
RES = ROOT / "bench" / "results" / "planner"
CL = ROOT / "examples" / "clusters"


def users_sweep(res):
    Ns = [10, 20, 30, 40, 50]
    rows = {}
    for N in Ns:
        inst = random_instance(np.random.default_rng(100 + N), N, 10)
        t0 = time.perf_counter()
        sol = solve_split(inst)
        rows.setdefault("proposed", []).append({**totals(inst, sol.point), "solve_s": time.perf_counter() - t0,
                                                "solves": sol.solves, "solver_failures": sol.solver_failures})
        for name, fn in BASELINES.items():
            b = fn(inst)
            rows.setdefault(name, []).append({**totals(inst, b.point), "solves": b.solves,
                                              "solver_failures": b.solver_failures})
    res["users_sweep"] = {"users": Ns, "servers": 10, "rows": rows}
    fig, axs = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, lab in zip(axs, ("objective", "energy_j", "delay_s"), ("objective", "energy (J)", "delay (s)")):
        for name, vals in rows.items():
            ax.plot(Ns, [v[key] for v in vals], marker="o", lw=2.5 if name == "proposed" else 1, label=name)
        ax.set_xlabel("users (10 servers)")
        ax.set_ylabel(lab)
        ax.set_yscale("log")
    axs[0].legend(fontsize=7)
    fig.suptitle("Split fine-tuning: proposed (FP + CCCP) vs baselines, paper distributions")
    fig.tight_layout()
    fig.savefig(IMG / "planner_split_users.png", dpi=110)
    plt.close(fig)


def weight_sweep(res):
    ws = [1, 4, 7, 10]
    out = {}
    fig, axs = plt.subplots(1, 3, figsize=(14, 4))
    for ax, wname in zip(axs, ("w_t", "w_e", "w_s")):
        out[wname] = {}
        for w in ws:
            s = SplitSettings(**{wname: float(w)})
            inst = random_instance(np.random.default_rng(7), 20, 4, s)
            sol = solve_split(inst)
            r = {"proposed": sol.objective, "mean_alpha": float(sol.point.alpha.mean()),
                 "solver_failures": sol.solver_failures}
            for name in ("alpha-only", "resources-only", "greedy-association"):
                r[name] = BASELINES[name](inst).objective
            out[wname][w] = r
        for name in ("proposed", "alpha-only", "resources-only", "greedy-association"):
            ax.plot(ws, [out[wname][w][name] for w in ws], marker="o", lw=2.5 if name == "proposed" else 1, label=name)
        ax.set_yscale("log")
        ax.set_xlabel(f"{wname} (others 1)")
        ax.set_ylabel("objective")
        ax2 = ax.twinx()
        ax2.plot(ws, [out[wname][w]["mean_alpha"] for w in ws], "k--", label="mean alpha (right)")
        ax2.set_ylabel("mean alpha (layers on device)")
    axs[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Weight sweeps (20 users, 4 servers)")
    fig.tight_layout()
    fig.savefig(IMG / "planner_split_weights.png", dpi=110)
    plt.close(fig)
    res["weight_sweep"] = out


def convergence(res):
    inst = random_instance(np.random.default_rng(100), 100, 10)
    server = greedy_association(inst)
    fp_start = objective(inst, best_integer_alpha(inst, initial_point(inst, server)))  # where FP starts
    t0 = time.perf_counter()
    sol = solve_split(inst)
    res["convergence"] = {"users": 100, "servers": 10, "cccp_history": sol.history, "fp_start": fp_start,
                          "fp_history": sol.fp_history, "solve_s": time.perf_counter() - t0, "solves": sol.solves,
                          "solver_failures": sol.solver_failures}
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8))
    axs[0].plot([fp_start] + sol.fp_history, marker="o")
    axs[0].set_title("FP steps (first association; 0 = start)")
    axs[1].plot(sol.history, marker="o")
    axs[1].set_title("outer iterations (association)")
    for ax in axs:
        ax.set_xlabel("iteration")
        ax.set_ylabel("objective")
    fig.suptitle("Convergence, 100 users / 10 servers")
    fig.tight_layout()
    fig.savefig(IMG / "planner_split_convergence.png", dpi=110)
    plt.close(fig)


def mec_cluster(res):
    spec = load_cluster(CL / "mec-50x10.yaml")
    arch = resolve_arch("llama-7b-paper")
    inst = build_split_instance(spec, SplitSettings(batch=512, hidden=arch.hidden_size, layers=arch.num_layers), 768)
    sol = solve_split(inst)
    bars = {"collaborative (proposed)": totals(inst, sol.point)}
    for name in ("edge-only", "local-only"):
        bars[name] = totals(inst, BASELINES[name](inst).point)
    res["mec_cluster"] = bars
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key in zip(axs, ("energy_j", "delay_s")):
        ax.bar(list(bars), [bars[k][key] for k in bars], color=["tab:blue", "tab:orange", "tab:green"])
        ax.set_ylabel(key)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("mec-50x10: energy and delay, collaborative vs edge-only vs local-only")
    fig.tight_layout()
    fig.savefig(IMG / "planner_split_mec.png", dpi=110)
    plt.close(fig)


def deft(res):
    cases = [("home-lab.yaml", "smollm2-135m", "lora"), ("home-lab.yaml", "smollm2-135m", "full"),
             ("classroom-deft.yaml", "roberta-base", "lora"), ("classroom-deft.yaml", "roberta-base", "full")]
    out = {}
    from edgeft.methods.peft_methods import LORA_TARGETS

    for cl, model, method in cases:
        arch = resolve_arch(model)
        targets = tuple(LORA_TARGETS[arch.family]) if method == "lora" else ()  # the layers edgeft's lora wraps
        plan = make_plan(load_cluster(CL / cl), arch, Workload(method=method, batch=8, seq_len=128, lora_targets=targets),
                         "deft")
        out[f"{cl.removesuffix('.yaml')}/{model}/{method}"] = {"dual-ascent": plan.predicted["time_s"], **plan.baselines,
                                                               "solver_s": plan.solver["runtime_s"]}
    res["deft"] = out
    fig, ax = plt.subplots(figsize=(11, 4))
    names = ["dual-ascent", "exact (bisection+Hungarian)", "equal-bandwidth", "greedy", "random", "offloading"]
    x = np.arange(len(out))
    for i, n in enumerate(names):
        ax.bar(x + i * 0.13, [out[k][n] for k in out], width=0.13, label=n)
    ax.set_xticks(x + 0.33, list(out), fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("round latency (s)")
    ax.legend(fontsize=7)
    ax.set_title("DEFT round latency: CRUNCH + dual ascent vs baselines (batch 8, seq 128)")
    fig.tight_layout()
    fig.savefig(IMG / "planner_deft_latency.png", dpi=110)
    plt.close(fig)


STEPS = (deft, mec_cluster, users_sweep, weight_sweep, convergence)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated steps: " + ",".join(f.__name__ for f in STEPS))
    only = [x for x in ap.parse_args().only.split(",") if x]
    unknown = set(only) - {f.__name__ for f in STEPS}
    if unknown:
        ap.error(f"unknown steps {sorted(unknown)}")
    IMG.mkdir(parents=True, exist_ok=True)
    RES.mkdir(parents=True, exist_ok=True)
    out = RES / "figures.json"
    res = json.loads(out.read_text()) if only and out.exists() else {}
    for step in (f for f in STEPS if not only or f.__name__ in only):
        t0 = time.perf_counter()
        step(res)
        print(step.__name__, f"{time.perf_counter() - t0:.1f}s", flush=True)
        (RES / "figures.json").write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
