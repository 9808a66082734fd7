"""Why a plan looks the way it does: why each unused device is idle, and what each baseline counts.

Reads a finished plan (stages, shares, per-stage times) and re-prices what-ifs with the planner's own
pieces (1F1B simulation, whole-row shares, the all-reduce over the star), so the reasons are numbers
from the same cost model, not guesses. Solvers are untouched.
"""

from __future__ import annotations

from edgeft.errors import PlanError
from edgeft.planner.cluster import ClusterSpec
from edgeft.planner.costmodel import CostTable
from edgeft.planner.hybrid_dp import plan_hybrid
from edgeft.planner.hybrid_pricing import allreduce_all_trainables, busiest_rows, simulate_1f1b

BASELINES = {
    # deft (s per round)
    "random": "a random memory-feasible block-to-device matching, equal band shares",
    "greedy": "deepest block first, each to the free device that finishes it soonest; equal band shares",
    "equal-bandwidth": "the optimal matching with every device given an equal band share",
    "offloading": "devices upload raw batches, the edge server trains every block: data leaves the devices "
                  "(a server-only bound)",
    "exact (bisection+Hungarian)": "the optimum of the same problem, solved exactly (the plan's gap to it)",
    # hybrid (s per epoch)
    "data-parallel": "the best one-stage plan: each device it uses holds the whole model, no pipeline",
    "standalone (best device)": "the fastest single device training alone",
    # split (objective: weighted delay + energy + stability)
    "local-only": "as many layers on the device as the split allows; resources optimised",
    "edge-only": "one layer on the device, the rest at the edge; resources optimised",
    "alpha-only": "equal shares, top clock and power; only the split point optimised",
    "resources-only": "split point fixed at half, resources optimised, greedy association",
    "greedy-association": "everything optimised but the association: best channel",
    "random-association": "everything optimised but the association: random",
}


def baseline_note(name: str) -> str:
    return BASELINES.get(name, "")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _step(stages: list[dict], M: int, cluster: ClusterSpec, table: CostTable, used: list[int]) -> float:
    it, _ = simulate_1f1b([s["fwd_s"] for s in stages], [s["bwd_s"] for s in stages], [s["comm_s"] for s in stages], M)
    return it + allreduce_all_trainables(cluster, table, used) + table.step_fixed_s


def _with_replica(stages: list[dict], s: int, k: int, M: int, cluster: ClusterSpec, table: CostTable) -> list[dict]:
    """The stages with device k added to stage s: rows re-split by rate, links limited by k's."""
    names = [d.name for d in cluster.devices]
    devs = cluster.devices
    B = table.workload.batch
    st = stages[s]
    old = [names.index(n) for n in st["devices"]]
    rates = [devs[i].compute.rate() for i in old]
    new_rates = rates + [devs[k].compute.rate()]
    slow = busiest_rows(B, M, new_rates, new_rates) / busiest_rows(B, M, st["shares"], rates)
    old_bw = min(cluster.full_band_rate(devs[i]) for i in old)
    bw = min(old_bw, cluster.full_band_rate(devs[k]))
    out = [dict(x) for x in stages]
    out[s].update(fwd_s=st["fwd_s"] * slow, bwd_s=st["bwd_s"] * slow)
    for j in (s - 1, s):  # the boundary into and out of this stage crosses k's link too
        if 0 <= j < len(out) - 1:
            out[j]["comm_s"] = stages[j]["comm_s"] * old_bw / bw
    return out


def idle_reasons(stages: list[dict], micro_batches: int, cluster: ClusterSpec, table: CostTable,
                 memory: dict[str, float]) -> dict[str, str]:
    """For each device of `cluster` in no stage: why, as the step time it would cause or the memory it lacks.

    stages: [{"layers", "devices" (names), "shares", "fwd_s", "bwd_s", "comm_s"}] as plans record them;
    memory: bytes each used device holds (the planner's figure)."""
    names = [d.name for d in cluster.devices]
    used = sorted(names.index(n) for st in stages for n in st["devices"])
    now = _step(stages, micro_batches, cluster, table, used)
    reasons = {}
    for k, dev in enumerate(cluster.devices):
        if k in used:
            continue
        if cluster.full_band_rate(dev) <= 0:
            reasons[dev.name] = ("its link has rate 0 (no uplink), so it cannot exchange activations or gradients "
                                 "with the others; " + _alone(cluster, dev, table))
            continue
        cap = dev.memory_gb * 2**30
        options = []
        for s, st in enumerate(stages):
            need = min(memory.get(n, 0.0) for n in st["devices"])
            a, b = st["layers"][0], st["layers"][1] - 1
            if need > cap:
                options.append((float("inf"), f"too little memory to join stage {s} (blocks {a}..{b}): "
                                              f"{dev.memory_gb:g} GiB, its members hold {_gib(need)}"))
                continue
            trial = _with_replica(stages, s, k, micro_batches, cluster, table)
            t = _step(trial, micro_batches, cluster, table, sorted(used + [k]))
            ar_extra = (allreduce_all_trainables(cluster, table, sorted(used + [k]))
                        - allreduce_all_trainables(cluster, table, used))
            compute_saved = (st["fwd_s"] + st["bwd_s"]) - (trial[s]["fwd_s"] + trial[s]["bwd_s"])
            if ar_extra >= compute_saved and ar_extra > 0:
                slowest = cluster.devices[min(used + [k], key=lambda i: cluster.full_band_rate(cluster.devices[i]))]
                link = "its" if slowest is dev else f"{slowest.name}'s"
                why = (f"the all-reduce, over the slowest link among them ({link} "
                       f"{cluster.full_band_rate(slowest) / 1e6:.3g} Mbit/s), adds "
                       f"{ar_extra:.3g} s a step, more than its compute saves ({max(compute_saved, 0):.3g} s)")
            elif compute_saved <= 0:
                why = ("its share of a micro-batch (whole rows, by compute rate) does not shorten the stage: "
                       f"{table.workload.batch // micro_batches or 1} row(s) per micro-batch")
            else:
                why = "slower links between the stages"
            options.append((t, f"as a replica of stage {s} (blocks {a}..{b}) a step would take {t:.3g} s instead "
                               f"of {now:.3g} s: {why}"))
        best_t, text = min(options, key=lambda o: o[0])
        if best_t < now * (1 - 1e-6):  # say so plainly if a what-if beats the plan
            text += " (faster by this cost-model estimate, which prices a replica without the simulated 1F1B schedule the planner minimises)"
        reasons[dev.name] = text + "; " + _alone(cluster, dev, table)
    return reasons


def _alone(cluster: ClusterSpec, dev, table: CostTable) -> str:
    try:
        hp = plan_hybrid(cluster.model_copy(update={"devices": [dev]}), table, samples=table.workload.batch)
    except PlanError:
        return f"alone it cannot hold the model ({dev.memory_gb:g} GiB)"
    return f"alone a step takes {hp.iteration_s:.3g} s"


def idle_reasons_deft(plan) -> dict[str, str]:
    """DEFT gives each of L parameter blocks to one device; with more devices than blocks some wait."""
    used = [t for t in plan.tasks if t.role != "idle"]
    L = plan.workload.get("num_blocks", len(used))
    layers = max((t.layers[1] for t in used if t.layers), default=L)
    more = "(set --blocks, up to one per layer)" if L < layers else f"(one per layer already: the model has {layers})"
    return {t.device: (f"{L} parameter blocks for {len(plan.tasks)} devices {more}; the matching gave "
                       "them to devices that finish a round sooner")
            for t in plan.tasks if t.role == "idle"}
