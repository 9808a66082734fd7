"""Every parallel strategy, registered once: its name, the planner that places it, how a plan of it is
re-timed, explained, printed and drawn, and the runtime class a worker runs for it.

Adding a strategy is one `StrategyEntry` here (plus its solver and its runtime class). Everything else
asks this registry: `edgeft plan` and `edgeft launch`, the plan table and pictures, the run spec's
validation, the worker. The runtime class is named, not imported: the runtime sits above the planner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeft.errors import PlanError
from edgeft.planner.solve import deft_plan, hybrid_plan, split_plan
from edgeft.planner.plan import DeviceTask, Plan


@dataclass(frozen=True)
class StrategyEntry:
    name: str
    summary: str
    solve: Callable[..., Plan]  # (cluster, arch, workload, table, num_blocks, samples, split_settings) -> Plan
    runtime: str  # "module:Class" of the runtime Strategy (edgeft.runtime.strategies.loop.Strategy)
    # seconds of one time unit from the re-timed tasks: (plan, active tasks, compute_s(task), comm_s(task))
    retime: Callable[[Plan, list, Callable, Callable], float]
    placement_label: Callable[[DeviceTask], str]  # the note beside a device's bar in the placement picture
    idle: Callable | None = None  # (plan, cluster, table) -> {device: why it is idle}
    headline: str = "time_s"  # the predicted figure a plan leads with (plan.predicted[headline])
    pipeline_timeline: bool = False  # the timeline picture draws plan.timeline's 1F1B schedule
    makespan_line: bool = False  # the per-device timeline marks the round's makespan


def _deft_time(plan, active, comp, comm) -> float:
    return max(comp(t) + comm(t) for t in active) * plan.workload.get("rounds", 1)


def _split_time(plan, active, comp, comm) -> float:
    return sum(comp(t) + comm(t) for t in active)  # the paper's delay is a sum over users


def _hybrid_time(plan, active, comp, comm) -> float:
    from edgeft.planner.hybrid_pricing import simulate_1f1b

    fwd, bwd, cm = [], [], []
    for st in plan.stages:
        scale = max(comp(plan.task(d)) / plan.task(d).compute_s if plan.task(d).compute_s else 1.0
                    for d in st["devices"])
        fwd.append(st["fwd_s"] * scale)
        bwd.append(st["bwd_s"] * scale)
        cm.append(st["comm_s"])
    it_s, _ = simulate_1f1b(fwd, bwd, cm, plan.micro_batches)
    it_s += max(st["allreduce_s"] for st in plan.stages) + plan.predicted.get("step_fixed_s", 0.0)
    return it_s * plan.workload["iterations"]


def _hybrid_idle(plan, cluster, table) -> dict[str, str]:
    from edgeft.planner.explain import idle_reasons

    return idle_reasons(plan.stages, plan.micro_batches, cluster, table, plan.predicted["memory_bytes"])


def _deft_idle(plan, cluster, table) -> dict[str, str]:
    from edgeft.planner.explain import idle_reasons_deft

    return idle_reasons_deft(plan)


STRATEGIES: dict[str, StrategyEntry] = {e.name: e for e in (
    StrategyEntry("deft", "each device trains the blocks the plan gives it; the edge server aggregates",
                  deft_plan, "edgeft.runtime.strategies.deft:Deft", _deft_time,
                  lambda t: f"{t.bandwidth_share:.2f} band", idle=_deft_idle, makespan_line=True),
    StrategyEntry("split", "devices run the first blocks, the edge server the rest",
                  split_plan, "edgeft.runtime.strategies.split:Split", _split_time,
                  lambda t: f"-> {t.server}", headline="objective"),
    StrategyEntry("hybrid", "a 1F1B pipeline over stages, data parallel inside each stage",
                  hybrid_plan, "edgeft.runtime.strategies.hybrid:Hybrid", _hybrid_time,
                  lambda t: f"share {t.data_share:.2f}", idle=_hybrid_idle, pipeline_timeline=True),
)}


def get(name: str, error: type[Exception] = PlanError) -> StrategyEntry:
    if name not in STRATEGIES:
        raise error(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def make_plan(
    cluster, arch, workload, strategy: str, table=None, num_blocks: int | None = None, samples: int = 1000,
    split_settings=None,
) -> Plan:
    """The strategy's plan of this workload on this cluster, with its baselines and the solver's time."""
    from edgeft.planner.costmodel import analytic_costs

    entry = get(strategy)
    table = table or analytic_costs(arch, workload)
    t0 = time.perf_counter()
    plan = entry.solve(cluster, arch, workload, table, num_blocks, samples, split_settings)
    plan.solver["runtime_s"] = time.perf_counter() - t0
    plan.solver["costs"] = table.source
    # A baseline that fits nowhere has no time: null in plan.json (Infinity is not JSON).
    plan.baselines = {k: (v if np.isfinite(v) else None) for k, v in plan.baselines.items()}
    return plan


def predict_time(plan: Plan, device_flops: dict[str, float] | None = None,
                 link_bps: dict[str, float] | None = None) -> float:
    """Re-times a plan with measured FLOP/s per device and/or measured uplink bit/s per device
    (missing entries keep the plan's own numbers). Returns seconds per plan.predicted['time_unit']."""
    device_flops = device_flops or {}
    link_bps = link_bps or {}

    def comp(t: DeviceTask) -> float:
        if t.device in device_flops and t.work_flops:
            return t.work_flops / device_flops[t.device]
        return t.compute_s

    def comm(t: DeviceTask) -> float:
        if t.device in link_bps and (t.send_bytes or t.recv_bytes):
            bps = link_bps[t.device] * max(t.bandwidth_share, 1e-12) if t.bandwidth_share else link_bps[t.device]
            return (t.send_bytes + t.recv_bytes) * 8 / bps
        return t.comm_s

    active = [t for t in plan.tasks if t.role != "idle"]
    return get(plan.strategy).retime(plan, active, comp, comm)


def predict_epoch_time(plan: Plan, device_flops: dict[str, float] | None = None,
                       link_bps: dict[str, float] | None = None) -> float:
    """Alias kept for the runtime: seconds per epoch (hybrid) or per round (deft) with measured numbers."""
    return predict_time(plan, device_flops, link_bps)


def explain_idle(plan, cluster, table) -> dict[str, str]:
    """Why each idle device of the plan is idle (empty where the strategy uses every device)."""
    idle = get(plan.strategy).idle
    return idle(plan, cluster, table) if idle else {}
