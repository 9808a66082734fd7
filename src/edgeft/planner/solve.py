"""Each strategy's offline planner: from (cluster, model shape, workload) to a Plan, with its baselines.
The registry (planner.strategies) picks one by the strategy's name."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np

from edgeft.errors import PlanError
from edgeft.planner.deft_problem import build_deft_instance
from edgeft.planner.hybrid_dp import plan_hybrid
from edgeft.planner.dual_ascent import (
    baseline_equal_bandwidth, baseline_greedy, baseline_offloading, baseline_random, dual_ascent, exact_joint,
)
from edgeft.planner.plan import DeviceTask, Plan
from edgeft.planner.split_model import (
    SplitSettings, breakdown, build_split_instance, check_server_memory, device_bytes, lowest_fitting_split,
    memory_alpha_max, server_overloads, totals,
)
from edgeft.planner.split_solver import BASELINES, solve_split


def deft_plan(cluster, arch, workload, table, num_blocks, samples, split_settings) -> Plan:
    """Blocks and bandwidth shares by dual ascent, against the exact joint optimum and the baselines."""
    inst = build_deft_instance(cluster, table, num_blocks)
    sol = dual_ascent(inst)
    exact = exact_joint(inst)
    server_rate = cluster.servers[0].compute.rate()
    data_bits = workload.batch * workload.seq_len * 4 * 8  # token ids of one batch
    base = {
        "random": baseline_random(inst).makespan,
        "greedy": baseline_greedy(inst).makespan,
        "equal-bandwidth": baseline_equal_bandwidth(inst).makespan,
        "offloading": baseline_offloading(inst, server_rate, data_bits).makespan,
        "exact (bisection+Hungarian)": exact.makespan,
    }
    per = sol.per_device(inst)
    tasks = []
    for k, name in enumerate(inst.names):
        if k in per:
            j = per[k]["depth"] - 1
            tasks.append(DeviceTask(
                device=name, role="block-trainer", layers=list(inst.blocks[j]), server=cluster.servers[0].name,
                bandwidth_share=float(sol.share[k]), rate_bps=float(sol.share[k] * inst.rate[k]),
                work_flops=float(inst.work_flops[j]), send_bytes=float(inst.upload_bits[j] / 8),
                recv_bytes=float(inst.download_bits / 8),
                compute_s=per[k]["compute_s"], comm_s=per[k]["comm_s"], memory_bytes=float(inst.mem_need[j]),
                energy_j=per[k]["energy_j"],
            ))
        else:
            tasks.append(DeviceTask(device=name, role="idle"))
    energy = sum(t.energy_j or 0.0 for t in tasks)
    return Plan(
        strategy="deft", model=arch.name, method=workload.method, cluster=cluster.name,
        workload={**asdict(workload), "rounds": 1, "num_blocks": inst.L}, tasks=tasks,
        predicted={"time_s": sol.makespan, "time_unit": "round", "energy_j": energy,
                   "memory_bytes": {t.device: t.memory_bytes for t in tasks if t.role != "idle"}},
        baselines=base,
        solver={"name": "dual-ascent (CRUNCH + Hungarian + closed-form bandwidth)", "iterations": sol.iterations,
                "gap_to_exact": sol.makespan / exact.makespan - 1, "history": sol.history},
    )


def layer_training_flops(arch, table, batch: int):
    """psi(seq) of the split model from the method's cost table: one block's forward and training backward on
    `batch` rows of `seq` tokens. The paper's psi prices full fine-tuning of a GPT-shaped block (12 h^2 weights)
    whatever the method; LoRA's backward computes no gradient of the frozen weights, and a Llama block's MLP is
    not 4h wide. Another sequence length (a device's own `seq_len`) scales it as the analytic costs scale."""
    from edgeft.planner.costmodel import analytic_costs

    def per_layer(t) -> float:
        return float(np.mean(t.fwd + t.bwd_train)) * batch / t.workload.batch

    at_table = per_layer(table)
    analytic_at_table = per_layer(analytic_costs(arch, table.workload))

    def psi(seq: int) -> float:
        if seq == table.workload.seq_len:
            return at_table
        other = analytic_costs(arch, replace(table.workload, seq_len=seq))
        return at_table * per_layer(other) / analytic_at_table

    return psi


def split_plan(cluster, arch, workload, table, num_blocks, samples, settings) -> Plan:
    settings = settings or SplitSettings(batch=workload.batch, hidden=arch.hidden_size, layers=arch.num_layers)
    inst = build_split_instance(cluster, settings, workload.seq_len, layer_training_flops(arch, table, settings.batch))
    inst = replace(inst, alpha_max=memory_alpha_max(cluster, table))  # a device takes no more layers than it holds
    res = solve_split(inst)
    while True:  # a server that cannot hold its users' parts: they keep more layers (a floor on their split
        _, over = server_overloads(cluster, table, res.point)  # points) and the solver plans again (may move them)
        raised = [lowest_fitting_split(cluster, table, inst, res.point, m) for m in over]
        if not over or any(a is None for a in raised):
            break  # every server holds its part, or one cannot even then: check_server_memory names it
        floor = inst.a_min.copy()
        for m, alpha in zip(over, raised):
            on = res.point.server == m
            floor[on] = np.maximum(floor[on], alpha[on])
        inst = replace(inst, alpha_min=floor)  # strictly higher for some user each time: the loop ends
        res = solve_split(inst)
    pt = res.point
    server_need = check_server_memory(cluster, table, inst, pt)
    br = breakdown(inst, pt)
    r_bps = (pt.b * np.log2(1 + inst.gamma[np.arange(inst.N), pt.server] * pt.p / pt.b)) * 1e6
    tasks = []
    for n, name in enumerate(inst.names):
        m = int(pt.server[n])
        a = int(round(pt.alpha[n]))
        tasks.append(DeviceTask(
            device=name, role="split-user", layers=[0, a], split_layer=a, server=inst.server_names[m],
            bandwidth_share=float(pt.b[n] / inst.W[m]), rate_bps=float(r_bps[n]), freq_ghz=float(pt.f[n]),
            tx_power_w=float(pt.p[n]), work_flops=float(a * inst.psi[n]), send_bytes=float(inst.data_mbit[n] * 1e6 / 8),
            compute_s=float(br["t_user"][n] + br["t_edge"][n]), comm_s=float(br["t_comm"][n]),
            energy_j=float(br["e_user"][n] + br["e_edge"][n] + br["e_comm"][n]), memory_bytes=device_bytes(table, a),
        ))
    tot = totals(inst, pt)
    base = {name: fn(inst).objective for name, fn in BASELINES.items()}
    return Plan(
        strategy="split", model=arch.name, method=workload.method, cluster=cluster.name,
        workload={**asdict(workload), "split": asdict(settings)}, tasks=tasks,
        predicted={"time_s": tot["delay_s"], "time_unit": "step (sum over users)", "energy_j": tot["energy_j"],
                   "objective": tot["objective"], "stability": tot["stability"],
                   "server_edge_freq_ghz": {inst.names[n]: float(pt.fe[n]) for n in range(inst.N)},
                   "server_memory_bytes": dict(zip(inst.server_names, server_need))},
        baselines=base,
        solver={"name": "quadratic-transform FP + CCCP association", "objective_history": res.history,
                "fp_history": res.fp_history},
    )


def hybrid_plan(cluster, arch, workload, table, num_blocks, samples, split_settings) -> Plan:
    hp = plan_hybrid(cluster, table, samples=samples)
    names = [d.name for d in cluster.devices]
    rates = [d.compute.rate() for d in cluster.devices]
    tasks = {n: DeviceTask(device=n, role="idle") for n in names}
    stages = []
    for s_i, st in enumerate(hp.stages):
        for d, share, mem in zip(st.devices, st.shares, st.memory):
            comp = (st.fwd_s + st.bwd_s) * hp.micro_batches
            tasks[names[d]] = DeviceTask(
                device=names[d], role="stage", layers=list(st.layers), stage=s_i, data_share=float(share),
                work_flops=comp * rates[d], send_bytes=float(table.boundary_bytes * share) if s_i < len(hp.stages) - 1 else 0.0,
                compute_s=comp, comm_s=st.comm_s * hp.micro_batches, memory_bytes=float(mem),
                rate_bps=cluster.full_band_rate(cluster.devices[d]),
            )
        stages.append({"layers": list(st.layers), "devices": [names[d] for d in st.devices], "shares": st.shares,
                       "fwd_s": st.fwd_s, "bwd_s": st.bwd_s, "comm_s": st.comm_s, "allreduce_s": st.allreduce_s})
    iters = int(np.ceil(samples / workload.batch))
    base = {}
    try:
        base["data-parallel"] = plan_hybrid(cluster, table, samples=samples, max_stages=1).epoch_s
    except PlanError:
        base["data-parallel"] = float("inf")
    best_single = float("inf")
    for d in cluster.devices:
        one = cluster.model_copy(update={"devices": [d]})
        try:
            best_single = min(best_single, plan_hybrid(one, table, samples=samples).epoch_s)
        except PlanError:
            pass
    base["standalone (best device)"] = best_single
    predicted = {"time_s": hp.epoch_s, "time_unit": "epoch", "iteration_s": hp.iteration_s,
                 "step_fixed_s": table.step_fixed_s,
                 "memory_bytes": {t.device: t.memory_bytes for t in tasks.values() if t.role != "idle"}}
    if hp.cached_epoch_s is not None:
        predicted["cached_epoch_s"] = hp.cached_epoch_s
        predicted["cached_data_shares"] = dict(zip(names, hp.cached_shares))
    return Plan(
        strategy="hybrid", model=arch.name, method=workload.method, cluster=cluster.name,
        workload={**asdict(workload), "samples": samples, "iterations": iters}, tasks=list(tasks.values()),
        predicted=predicted, stages=stages, micro_batches=hp.micro_batches, baselines=base,
        solver={"name": "DP over stages x device groups + local search, 1F1B simulated",
                "device_order": [names[i] for i in hp.order]},
        timeline=hp.timeline,
    )
