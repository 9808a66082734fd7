"""The terms that make the planner's time describe what the runtime does: the deft broadcast, the
LoRA layers really wrapped, the measured per-step costs of hybrid, and cvxpy only when needed."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from edgeft.errors import ConfigError
from edgeft.models.arch import PRESETS
from edgeft.planner.cluster import parse_cluster
from edgeft.methods.peft_methods import lora_params
from edgeft.planner.costmodel import Workload, analytic_costs
from edgeft.planner.deft_problem import DeftInstance, build_deft_instance
from edgeft.planner.hybrid_dp import plan_hybrid
from edgeft.planner.dual_ascent import brute_force_joint, dual_ascent, exact_joint


def _cluster(n=3, rates=(30e9, 25e9, 40e9), mbps=(90, 30, 15)):
    return parse_cluster({"name": "t", "devices": [
        {"name": f"d{i}", "compute": {"flops": rates[i]}, "memory_gb": 8, "link": {"rate_mbps": mbps[i]}}
        for i in range(n)], "servers": [{"name": "edge", "compute": {"flops": 1e13}, "memory_gb": 80, "band_mhz": 20}]})


def test_lora_targets_count_every_wrapped_layer():
    bert = PRESETS["minilm-l6"]  # h 384, intermediate 1536
    assert lora_params(bert, 8) == 8 * (384 + 384) * 2  # PEFT's default: query, value
    # edgeft's lora on BERT: query, key, value + the three 'dense' layers of a block
    assert lora_params(bert, 8, ("query", "key", "value", "dense")) == 8 * (4 * 768 + 2 * (384 + 1536))
    t = analytic_costs(bert, Workload(method="lora", lora_targets=("query", "key", "value", "dense")))
    assert t.trainable[0] == 55296  # what the runtime's deft run uploads per layer (1.77 MB / 4 rounds / 2 layers)
    with pytest.raises(ConfigError, match="q_proj"):
        lora_params(bert, 8, ("q_proj",))


def test_runtime_table_uses_the_lora_method_targets():
    from edgeft.methods.peft_methods import LORA_TARGETS
    from edgeft.runtime.placement import make_table

    arch = PRESETS["smollm2-135m"]
    t = make_table(arch, "lora", 8, 32, {})
    assert t.workload.lora_targets == tuple(LORA_TARGETS["llama"])
    assert t.trainable[0] == lora_params(arch, 8, tuple(LORA_TARGETS["llama"]))
    mine = make_table(arch, "lora", 8, 32, {"target_modules": ["q_proj"]})
    assert mine.trainable[0] == lora_params(arch, 8, ("q_proj",))


def test_deft_round_counts_the_broadcast_over_the_shared_link():
    table = analytic_costs(PRESETS["minilm-l6"], Workload(method="lora", batch=8, seq_len=24))
    with_b = build_deft_instance(_cluster(), table, 3)
    without = build_deft_instance(_cluster(), table, 3, broadcast=False)
    assert with_b.download_bits == pytest.approx(table.update_bytes(0, 6) * 8)
    assert without.download_bits == 0
    share = np.array([0.5, 0.3, 0.2])
    extra = with_b.latency(share) - without.latency(share)
    assert np.allclose(extra, with_b.download_bits / (share * with_b.rate)[:, None])
    sol = dual_ascent(with_b)
    per = sol.per_device(with_b)
    for k, d in per.items():
        assert d["down_s"] == pytest.approx(with_b.download_bits / (sol.share[k] * with_b.rate[k]))
        assert d["compute_s"] + d["comm_s"] <= sol.makespan * (1 + 1e-9)
    assert sol.makespan > dual_ascent(without).makespan


def test_dual_ascent_optimises_the_broadcast_too():
    rng = np.random.default_rng(3)
    for _ in range(25):
        K = int(rng.integers(2, 5))
        L = int(rng.integers(1, K + 1))
        c = np.cumsum(rng.uniform(0.5, 2, L))
        inst = DeftInstance([f"d{k}" for k in range(K)], c[None, :] / rng.uniform(0.5, 3, K)[:, None],
                            np.ones(L), np.full(K, 2.0), rng.uniform(0.5, 5, L), rng.uniform(0.5, 10, K),
                            download_bits=float(rng.uniform(1, 20)))
        best = brute_force_joint(inst)
        assert dual_ascent(inst).makespan <= best.makespan * 1.01
        assert exact_joint(inst).makespan == pytest.approx(best.makespan, rel=1e-6)


def test_hybrid_adds_measured_step_costs():
    table = analytic_costs(PRESETS["minilm-l6"], Workload(method="pac", batch=8, seq_len=24))
    one = _cluster(1, rates=(4e9,), mbps=(50,))
    base = plan_hybrid(one, table, samples=32)
    fixed = plan_hybrid(one, dataclasses.replace(table, step_fixed_s=0.05), samples=32)
    assert fixed.iteration_s == pytest.approx(base.iteration_s + 0.05)
    # the cached epoch: measured effective FLOPs per sample at the device's rate, plus the fixed part
    meas = plan_hybrid(one, dataclasses.replace(table, step_fixed_s=0.05, cached_step_flops=2e7), samples=32)
    assert meas.cached_epoch_s == pytest.approx((2e7 * 8 / 4e9 + 0.05) * 4)
    call = plan_hybrid(one, dataclasses.replace(table, cached_step_flops=2e7, cached_call_flops=1e8), samples=32)
    assert call.cached_epoch_s == pytest.approx((1e8 / 4e9 + 2e7 * 8 / 4e9) * 4)  # once per step, not per row
    assert base.cached_epoch_s == pytest.approx(table.bwd_train.sum() * 1.5 / 4e9 * 4)
    # measured at every row count: one device takes all 8 rows, looked up at 8, not on the line
    rows = tuple(1e8 * (i + 1) ** 0.5 for i in range(8))
    tab = plan_hybrid(one, dataclasses.replace(table, cached_step_flops=2e7, cached_call_flops=1e8,
                                               cached_rows_flops=rows), samples=32)
    assert tab.cached_epoch_s == pytest.approx(rows[7] / 4e9 * 4)


def test_planner_imports_without_cvxpy_and_names_it_when_needed():
    code = ("import sys; sys.modules['cvxpy'] = None\n"
            "import edgeft.planner, edgeft.planner.solve\n"
            "from edgeft.planner.split_solver import _cvxpy\n"
            "try:\n    _cvxpy()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("PlanError") and "pip install cvxpy" in out


def test_measured_trainables_size_the_broadcast_and_the_cached_all_reduce():
    table = analytic_costs(PRESETS["minilm-l6"], Workload(method="pac", batch=8, seq_len=24))
    measured = dataclasses.replace(table, trainable_total=123_456)
    assert build_deft_instance(_cluster(), measured, 3).download_bits == 123_456 * 4 * 8
    two = _cluster(2, rates=(4e9, 4e9), mbps=(50, 20))
    hp = plan_hybrid(two, measured, samples=32)
    members = sorted(d for st in hp.stages for d in st.devices)
    assert hp.cached_shares == pytest.approx([0.5, 0.5])
    assert members == [0, 1]  # (a two-stage pipeline here) every device of the run all-reduces every step
    ar = 123_456 * 4 * 8 / 20e6  # 2(n-1)/n = 1 for two, over the slower link
    work = table.bwd_train.sum() * 1.5 / 8 * 8 / 8e9
    assert hp.cached_epoch_s == pytest.approx((work + ar) * 4)


def test_hybrid_counts_whole_rows_per_device():
    from edgeft.planner.hybrid_pricing import busiest_rows, whole_rows

    assert whole_rows(2, [0.25] * 4).tolist() == [1, 1, 0, 0]  # the runtime's share_rows: two devices idle
    assert whole_rows(7, [0.5, 0.3, 0.2]).tolist() == [4, 2, 1]
    rates = np.full(4, 2e9)
    assert busiest_rows(16, 8, [0.25] * 4, rates) == pytest.approx(2 * 16 / 8 / 8e9)  # twice the ideal
    assert busiest_rows(16, 1, [0.25] * 4, rates) == pytest.approx(16 / 8e9)
    four = parse_cluster({"name": "eq", "devices": [
        {"name": f"e{i}", "compute": {"flops": 2e9}, "memory_gb": 4, "link": {"rate_mbps": 100}} for i in range(4)],
        "servers": [{"name": "edge", "compute": {"flops": 1e13}, "memory_gb": 80, "band_mhz": 20}]})
    table = analytic_costs(PRESETS["minilm-l6"], Workload(method="pac", batch=16, seq_len=26))
    hp = plan_hybrid(four, table, samples=64)
    assert len(hp.stages) == 1 and hp.micro_batches == 1  # one stage: no pipelining to win, whole rows to lose


def test_hybrid_step_all_reduces_every_trainable_over_every_device():
    from edgeft.planner.hybrid_pricing import simulate_1f1b

    table = analytic_costs(PRESETS["minilm-l6"], Workload(method="pac", batch=8, seq_len=24))
    measured = dataclasses.replace(table, trainable_total=123_456)
    two = _cluster(2, rates=(4e9, 4e9), mbps=(50, 20))
    hp = plan_hybrid(two, measured, samples=32)
    sim, _ = simulate_1f1b([s.fwd_s for s in hp.stages], [s.bwd_s for s in hp.stages],
                           [s.comm_s for s in hp.stages], hp.micro_batches)
    # the runtime all-reduces the measured trainables over both devices, whatever the stages
    assert hp.iteration_s == pytest.approx(sim + 123_456 * 4 * 8 / 20e6)
