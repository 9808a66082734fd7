"""Turn the planner's solutions into a runtime placement (ranks + layout) with its predictions.

The solvers live in edgeft.planner (CRUNCH / dual ascent for deft, the pipeline DP for hybrid);
this module only adapts their output to processes: which rank is which device, which blocks each
runs, which link share it gets, and what time per epoch the planner predicts for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from edgeft.errors import ConfigError, PlanError
from edgeft.models.arch import ModelArch
from edgeft.planner.cluster import ClusterSpec
from edgeft.planner.costmodel import CostTable, Workload, analytic_costs
from edgeft.planner.hybrid_pricing import allreduce_all_trainables, ring_allreduce_among
from edgeft.runtime.spec import GRAD_SYNC_DTYPES, RuntimeTrain


@dataclass
class RuntimePlan:
    strategy: str
    ranks: list[dict]  # name, kind, device_flops, memory_mb, up_bps, down_bps, latency_s
    layout: dict
    predicted: dict  # epoch_s (first epoch), later_epoch_s, step_s, per-rank figures
    planner: dict = field(default_factory=dict)  # the solver's own output, for the record
    # the run settings `predicted` was priced for (run.priced_for), so a run reusing the plan can tell whether
    # its times are this run's; empty in plans written before it was recorded
    priced_for: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "ranks": self.ranks, "layout": self.layout, "predicted": self.predicted,
                "planner": self.planner, "priced_for": self.priced_for}


def priced_method(method: str, method_options: dict):
    """The method, checked to have a cost model the planner can price it with (Method.priced_as)."""
    from edgeft.methods.base import METHODS, get_method, method_class

    if method_class(method).priced_as is None:
        usable = ", ".join(n for n in sorted(METHODS) if METHODS[n].priced_as)
        raise ConfigError(f"method '{method}' has no cost model for planning (use {usable})")
    return get_method(method, method_options)


def make_table(arch: ModelArch, method: str, batch: int, seq_len: int, method_options: dict,
               task_kind: str = "auto", num_labels: int = 2, grad_sync: str | None = None) -> CostTable:
    """The cost table of this method with these options; the method says which workload prices it and,
    when its cost model's per-block count does not, where its trainable parameters are. `grad_sync`: the
    dtype of the runtime's gradient all-reduce (None: the runtime's default)."""
    m = priced_method(method, method_options)
    sync = grad_sync or RuntimeTrain.model_fields["grad_sync"].default
    wl = Workload(batch=batch, seq_len=max(int(seq_len), 1), task_kind=task_kind, num_labels=num_labels,
                  grad_sync_bytes=GRAD_SYNC_DTYPES[sync].itemsize, **m.cost_workload(arch))
    table = analytic_costs(arch, wl)
    layout = m.trainable_layout(arch, task_kind, num_labels)
    if layout:
        trainable, total = layout
        table = dataclasses.replace(table, trainable=np.array(trainable, float), trainable_total=total)
    return table


def with_measured_parts(table: CostTable, parts: dict) -> CostTable:
    """The table with the step's FLOPs shared out among embedding, blocks and head as this host measured
    them (calibrate.PartClock), instead of by FLOP count: the step's total stays the cost model's, each
    part gets its measured share of it. A device that runs only the embedding and a block is then
    priced with their per-call work, which a FLOP count leaves out."""
    fwd, bwd = np.asarray(parts["fwd"], float), np.asarray(parts["bwd"], float)
    if len(fwd) != table.num_layers or len(bwd) != table.num_layers:
        raise ConfigError(f"calibration measured {len(fwd)} blocks, the cost table has {table.num_layers}")
    total = float(table.embed_fwd + table.fwd.sum() + table.bwd_train.sum() + table.head_fwd + table.head_bwd)
    head = table.head_fwd + table.head_bwd
    head_fwd_share = table.head_fwd / head if head > 0 else 0.5
    pass_ratio = np.divide(table.bwd_pass, table.bwd_train, out=np.zeros_like(table.bwd_pass),
                           where=table.bwd_train > 0)
    bwd_train = bwd * total
    return dataclasses.replace(
        table, embed_fwd=parts["embed"] * total, fwd=fwd * total, bwd_train=bwd_train,
        bwd_pass=bwd_train * pass_ratio, head_fwd=parts["rest"] * total * head_fwd_share,
        head_bwd=parts["rest"] * total * (1 - head_fwd_share),
        notes={**table.notes, "parts": "measured shares of the step (runtime calibration)"})


def _device_rank(cluster: ClusterSpec, d, share: float = 1.0) -> dict:
    rate = cluster.full_band_rate(d) * share
    return {"name": d.name, "kind": "device", "device_flops": d.compute.rate(), "memory_mb": d.memory_gb * 1024,
            "up_bps": rate, "down_bps": rate, "latency_s": d.link.latency_ms / 1000}


def _server_rank(cluster: ClusterSpec) -> dict:
    s = cluster.servers[0]
    return {"name": s.name, "kind": "server", "device_flops": s.compute.rate(), "memory_mb": s.memory_gb * 1024,
            "up_bps": 0.0, "down_bps": 0.0, "latency_s": 0.0}


def pick(cluster: ClusterSpec, names: list[str] | None) -> ClusterSpec:
    """The cluster restricted to the named devices (after a device is lost)."""
    if names is None:
        return cluster
    unknown = [n for n in names if n not in {d.name for d in cluster.devices}]
    if unknown:
        servers = [n for n in unknown if n in {s.name for s in cluster.servers}]
        why = (f" ({', '.join(servers)} {'is a server' if len(servers) == 1 else 'are servers'}: a run always has its "
               "server; --devices picks among the devices)") if servers else ""
        raise PlanError(f"devices {unknown} are not in {cluster.where}{why}; its devices: "
                        f"{', '.join(d.name for d in cluster.devices)}")
    if not names:
        raise PlanError(f"{cluster.where}: no devices left to run on")
    return cluster.model_copy(update={"devices": [d for d in cluster.devices if d.name in names]})


# -- split ------------------------------------------------------------------------------------------
def plan_split(cluster: ClusterSpec, table: CostTable, steps: int, cut: int | None = None) -> RuntimePlan:
    """One cut for every device (their device-side adapters are averaged, so they must match).

    Per step, device k runs embed + blocks[:cut] on its share of the batch (rows by compute rate
    would change the batch split; we split rows evenly, as the runtime does), uploads the cut
    activations, the server runs the rest and returns the activation gradient; then the devices
    all-reduce the gradients of their side's trainables (a ring over their links). The cut that
    minimises the predicted step time is chosen unless one is given.
    """
    L, K = table.num_layers, len(cluster.devices)
    mute = [d.name for d in cluster.devices if cluster.full_band_rate(d) <= 0]
    if mute:  # every device sends its cut activations to the server each step
        raise PlanError(f"split: devices {mute} have zero uplink rate, but every device sends its activations to the "
                        "edge server each step: leave them out with --devices, or give link.rate_mbps > 0")
    B = table.workload.batch
    server = cluster.servers[0]
    srate = server.compute.rate()
    rows = [B // K + (1 if i < B % K else 0) for i in range(K)]
    best = None
    for c in ([cut] if cut else range(1, L)):
        if not 0 < c < L:
            raise PlanError(f"split cut {c} must be between 1 and {L - 1} for a {L}-block model")
        per_dev = []
        dev_trainable = float(table.trainable[:c].sum()) + table.embed_trainable  # the embedding is device-side
        for d, r in zip(cluster.devices, rows):
            f = r / B
            work = (table.embed_fwd + table.fwd[:c].sum() + table.bwd_train[:c].sum()) * f
            bits = table.boundary_bytes * f * 8
            link = cluster.full_band_rate(d)
            lat = d.link.latency_ms / 1000
            mem = (table.params[:c].sum() + table.embed_params) * table.workload.dtype_bytes + \
                table.act_saved[:c].sum() * f + table.trainable_state_bytes(dev_trainable)
            per_dev.append({"name": d.name, "compute_s": work / d.compute.rate(), "up_s": bits / link + lat,
                            "down_s": bits / link + lat, "memory_bytes": float(mem),
                            "fits": mem <= d.memory_gb * 2**30})
        srv = (table.fwd[c:].sum() + table.bwd_train[c:].sum() + table.head_fwd + table.head_bwd) / srate
        ring = ring_allreduce_among(cluster, dev_trainable * table.workload.grad_sync_bytes)
        step = max(p["compute_s"] * (2 / 3) + p["up_s"] for p in per_dev) + srv + \
            max(p["down_s"] + p["compute_s"] / 3 for p in per_dev) + ring
        if all(p["fits"] for p in per_dev) and (best is None or step < best[1]):
            best = (c, step, per_dev, srv)
        for p in per_dev:
            p["allreduce_s"] = ring
    if best is None:
        raise PlanError(f"no split cut fits every device's memory in {cluster.where}: lower the batch or "
                        "sequence length, or give the devices more memory_gb")
    c, step, per_dev, srv = best
    ranks = [_server_rank(cluster)] + [_device_rank(cluster, d) for d in cluster.devices]
    return RuntimePlan("split", ranks, {"server": 0, "devices": list(range(1, K + 1)), "cut": c},
                       {"step_s": step, "epoch_s": step * steps, "later_epoch_s": step * steps,
                        "server_compute_s": srv, "per_device": per_dev},
                       {"solver": "enumerate cuts, cost model", "cut": c})


# -- deft ---------------------------------------------------------------------------------------------
def deft_round_s(inst, assign, share, cluster: ClusterSpec) -> float:
    """A round as the runtime runs it, which the planner's objective max_k(compute_k + link_k) does not
    see: the devices meet at the clipping all-reduce after computing, so the uploads start together
    once the slowest device is done; the server broadcasts when the last upload is in. Hence
    max compute + the scalar all-reduce's latencies + max upload + max download."""
    share = np.asarray(share, float)
    cols = np.arange(len(assign))
    rows = np.asarray(assign, int)
    compute = inst.compute_s[rows, cols].max()
    rate = share[rows] * inst.rate[rows]
    up = (inst.upload_bits[cols] / rate).max()
    down = (inst.download_bits / rate).max()  # the broadcast: every trainable, to each device (0 if none)
    lat = [cluster.devices[k].link.latency_ms / 1000 for k in set(rows.tolist())]
    sync = 2 * (len(lat) - 1) * 2 * max(lat, default=0.0)  # ring all-reduce of one scalar: 2(K-1) hops
    return float(compute + sync + up + down)


def plan_deft(cluster: ClusterSpec, table: CostTable, steps: int, num_blocks: int | None = None) -> RuntimePlan:
    """Dual-ascent joint block + bandwidth allocation (planner.joint) over the cluster's devices."""
    from edgeft.planner.deft_problem import build_deft_instance
    from edgeft.planner.dual_ascent import dual_ascent

    inst = build_deft_instance(cluster, table, num_blocks)
    sol = dual_ascent(inst)
    blocks, ranks, used = {}, [_server_rank(cluster)], []
    per_dev = sol.per_device(inst)
    for depth, k in enumerate(sol.assign):
        k = int(k)
        used.append(k)
    for k in sorted(set(used)):
        d = cluster.devices[k]
        ranks.append(_device_rank(cluster, d, float(sol.share[k])))
        depth = per_dev[k]["depth"]
        blocks[len(ranks) - 1] = list(inst.blocks[depth - 1])
    # each device's round = compute + its upload + the server's broadcast of all trainables, both at
    # its rate x share (the runtime shapes up- and downlink alike); the dual ascent optimises that, the
    # prediction is the round the runtime runs (deft_round_s)
    T = deft_round_s(inst, sol.assign, sol.share, cluster) + table.step_fixed_s
    return RuntimePlan("deft", ranks, {"server": 0, "devices": list(range(1, len(ranks))), "blocks": blocks},
                       {"step_s": T, "epoch_s": T * steps, "later_epoch_s": T * steps,
                        "per_device": {cluster.devices[k].name: v for k, v in per_dev.items()}},
                       {"solver": "dual_ascent", "makespan_s": sol.makespan,
                        "assign_depth_to_device": [cluster.devices[int(k)].name for k in sol.assign],
                        "share": {cluster.devices[k].name: float(sol.share[k]) for k in range(inst.K)},
                        "blocks_by_depth": inst.blocks})


# -- hybrid --------------------------------------------------------------------------------------------
def plan_hybrid(cluster: ClusterSpec, table: CostTable, samples: int, steps: int,
                micro_batches: int | None = None, max_stages: int | None = None) -> RuntimePlan:
    """The pipeline + data parallel DP (planner.hybrid); stage s's devices split each micro-batch."""
    from edgeft.planner.hybrid_dp import plan_hybrid as solve

    options = (micro_batches,) if micro_batches else (1, 2, 4, 8, 16, 32)
    hp = solve(cluster, table, samples=samples, max_stages=max_stages, micro_batch_options=options)
    ranks, stages = [], []
    for st in hp.stages:
        rk = []
        for k in st.devices:
            ranks.append(_device_rank(cluster, cluster.devices[k]))
            rk.append(len(ranks) - 1)
        stages.append({"blocks": list(st.layers), "ranks": rk, "shares": [float(x) for x in st.shares]})
    iters = steps
    later = None
    if hp.cached_epoch_s is not None:
        later = hp.cached_epoch_s / math.ceil(samples / table.workload.batch) * iters
    return RuntimePlan("hybrid", ranks, {"stages": stages, "micro_batches": hp.micro_batches},
                       {"step_s": hp.iteration_s, "epoch_s": hp.iteration_s * iters,
                        "later_epoch_s": later if later is not None else hp.iteration_s * iters},
                       {"solver": "planner.hybrid DP + local search on the 1F1B simulation",
                        "iteration_s": hp.iteration_s, "micro_batches": hp.micro_batches,
                        "stages": [{"layers": list(s.layers), "devices": [cluster.devices[k].name for k in s.devices],
                                    "shares": s.shares, "fwd_s": s.fwd_s, "bwd_s": s.bwd_s, "comm_s": s.comm_s,
                                    "allreduce_s": s.allreduce_s, "memory_bytes": s.memory} for s in hp.stages],
                        "cached_shares": hp.cached_shares})


def emulated_cluster(cluster: ClusterSpec, host_flops: float) -> ClusterSpec:
    """The cluster as the emulation really runs it: a device or server faster than this host runs at
    the host's speed (its slowdown is clamped to 1, emulation.slowdown_for)."""
    def cap(x):
        return x.model_copy(update={"compute": type(x.compute)(flops=min(x.compute.rate(), host_flops))})

    return cluster.model_copy(update={"devices": [cap(d) for d in cluster.devices],
                                      "servers": [cap(s) for s in cluster.servers]})


def repredict_split(plan: RuntimePlan, cluster: ClusterSpec, table: CostTable, steps: int) -> dict:
    """The split plan's cut, re-timed on `cluster`."""
    q = plan_split(cluster, table, steps, plan.layout["cut"]).predicted
    return {k: q[k] for k in ("step_s", "epoch_s", "later_epoch_s", "server_compute_s")}


def repredict_deft(plan: RuntimePlan, cluster: ClusterSpec, table: CostTable, steps: int) -> dict:
    """The deft plan's blocks and bandwidth shares, re-timed on `cluster`."""
    from edgeft.planner.deft_problem import build_deft_instance

    inst = build_deft_instance(cluster, table, len(plan.planner["blocks_by_depth"]))
    names = [d.name for d in cluster.devices]
    assign = [names.index(n) for n in plan.planner["assign_depth_to_device"]]
    share = np.array([plan.planner["share"][n] for n in names])
    T = deft_round_s(inst, assign, share, cluster) + table.step_fixed_s
    return {"step_s": T, "epoch_s": T * steps, "later_epoch_s": T * steps}


def owner_of(sample_id: str, shares: dict[int, float]) -> int:
    """Weighted rendezvous hashing: stable when a rank leaves (only its samples move)."""
    best, best_score = None, -math.inf
    for rank, w in shares.items():
        if w <= 0:
            continue
        h = int.from_bytes(hashlib.blake2b(f"{sample_id}/{rank}".encode(), digest_size=8).digest(), "big")
        u = (h + 0.5) / 2**64
        score = -w / math.log(u)
        if score > best_score:
            best, best_score = rank, score
    return best


def cached_epochs_s(plan: RuntimePlan, cluster: ClusterSpec, table: CostTable, sample_ids: list,
                    epochs: list[list[list[int]]]) -> list[float] | None:
    """PAC's epochs on the cache as the runtime runs them, one figure per epoch: each sample's taps live
    on one owner (owner_of over the plan's cached shares), so a step lasts as long as
    its busiest owner's cached step at its rows (measured at that row count: table.cached_flops) / its rate, then every device
    all-reduces all trainables and pays the host's fixed step work. The planner's own figure assumes
    every step splits by the shares exactly; with a few rows per device the hashed owners of a batch
    rarely do. `epochs`: each later epoch's batches (indices into sample_ids), in the run's order."""
    shares = plan.layout.get("cached_shares")
    if not shares or not table.cached_step_flops:  # only a hybrid PAC plan caches
        return None
    shares = {int(k): float(v) for k, v in shares.items()}
    rate = {d.name: d.compute.rate() for d in cluster.devices}
    rank_rate = [rate[r["name"]] for r in plan.ranks]
    used = [i for i, d in enumerate(cluster.devices) if d.name in {r["name"] for r in plan.ranks}]
    fixed = allreduce_all_trainables(cluster, table, used) + table.step_fixed_s
    owner: dict[int, int] = {}
    out = []
    for batches in epochs:
        total = 0.0
        for b in batches:
            rows = np.zeros(len(rank_rate))
            for i in b:
                if i not in owner:
                    owner[i] = owner_of(str(sample_ids[i]), shares)
                rows[owner[i]] += 1
            work = np.array([table.cached_flops(int(n)) for n in rows])  # measured at these row counts
            total += float(np.max(work / np.array(rank_rate))) + fixed
        out.append(total)
    return out
