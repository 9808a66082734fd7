"""edgeft.planner: cluster spec, cost model and the allocation solvers (CRUNCH, dual ascent,
fractional-programming split, hybrid-parallel DP). Pure numpy/scipy; cvxpy only when the split solver
runs (imported there, so the planner loads without it); no torch except for the profiler
(edgeft.measure.profile)."""

from edgeft.models.arch import PRESETS, ModelArch, resolve_arch
from edgeft.planner.cluster import ClusterSpec, load_cluster, parse_cluster
from edgeft.planner.costmodel import CostTable, Workload, analytic_costs
from edgeft.planner.crunch import brute_force, crunch
from edgeft.planner.dual_ascent import dual_ascent, exact_joint
from edgeft.planner.plan import DeviceTask, Plan
from edgeft.planner.strategies import STRATEGIES, make_plan, predict_epoch_time, predict_time

__all__ = [
    "PRESETS", "ModelArch", "resolve_arch", "STRATEGIES", "make_plan", "ClusterSpec", "load_cluster",
    "parse_cluster", "CostTable", "Workload", "analytic_costs", "crunch", "brute_force", "dual_ascent",
    "exact_joint", "DeviceTask", "Plan", "predict_time", "predict_epoch_time",
]
