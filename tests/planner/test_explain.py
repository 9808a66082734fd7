"""Plans explain themselves: why each idle device is idle, what each baseline counts, whole cells when piped."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeft.planner import load_cluster, make_plan, resolve_arch
from edgeft.planner.explain import BASELINES, idle_reasons
from edgeft.planner.render import block_range
from edgeft.runtime.placement import make_table

HOME = Path(__file__).resolve().parents[2] / "examples" / "clusters" / "home-lab.yaml"


def _plan(spec, method="pac"):
    arch = resolve_arch("smollm2-135m")
    table = make_table(arch, method, 8, 128, {})
    return make_plan(spec, arch, table.workload, "hybrid", table=table, samples=1000), table


def test_every_idle_device_gets_a_reason_priced_by_the_planners_cost_model():
    spec = load_cluster(HOME)
    plan, table = _plan(spec)
    idle = [t.device for t in plan.tasks if t.role == "idle"]
    assert idle, "home-lab's hybrid PAC plan leaves devices idle; this test needs one"
    reasons = idle_reasons(plan.stages, plan.micro_batches, spec, table, plan.predicted["memory_bytes"])
    assert sorted(reasons) == sorted(idle)
    now = f"instead of {plan.predicted['iteration_s']:.3g} s"  # the what-if starts from the plan's own step time
    for device in idle:
        assert now in reasons[device] and "alone a step takes" in reasons[device]
        worse = float(reasons[device].split("a step would take ")[1].split(" s")[0])
        assert worse > plan.predicted["iteration_s"]


def test_a_device_without_the_memory_is_told_so():
    spec = load_cluster(HOME)
    small = [d.model_copy(update={"memory_gb": 0.25}) if d.name == "phone-c" else d for d in spec.devices]
    spec = spec.model_copy(update={"devices": small})
    plan, table = _plan(spec, "full")
    reasons = idle_reasons(plan.stages, plan.micro_batches, spec, table, plan.predicted["memory_bytes"])
    assert "too little memory" in reasons["phone-c"] and "alone it cannot hold the model (0.25 GiB)" in reasons["phone-c"]


def test_piped_plan_keeps_whole_cells_explains_idle_devices_and_baselines(tmp_path, monkeypatch):
    from edgeft.cli.app import build_app

    monkeypatch.delenv("COLUMNS", raising=False)
    args = ["plan", "--cluster", str(HOME), "--model", "smollm2-135m", "--method", "pac", "--no-plots",
            "--out", str(tmp_path)]
    res = CliRunner().invoke(build_app(), [*args, "--strategy", "hybrid"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    for device in ("phone-a", "phone-b", "phone-c", "laptop"):
        assert any(line.startswith(f"{device} idle: as a replica of stage 0 (blocks 0..29)") for line in lines)
    for name in ("data-parallel", "standalone (best device)"):  # label and note whole, on one line
        assert any(name in line and BASELINES[name] in line for line in lines)
    lora = [a if a != "pac" else "lora" for a in args]  # deft trains blocks by backprop: PAC is refused there
    again = CliRunner().invoke(build_app(), [*lora, "--strategy", "deft"])
    assert again.exit_code != 0 and "already exists: pass --overwrite" in str(again.exception)
    res = CliRunner().invoke(build_app(), [*lora, "--strategy", "deft", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert any("offloading" in line and BASELINES["offloading"] in line for line in res.stdout.splitlines())


@pytest.mark.parametrize("blocks, text", [([0, 30], "0..29"), ([12, 18], "12..17"), ([], "-"), ([3, 3], "-")])
def test_plan_and_launch_print_blocks_alike(blocks, text):
    assert block_range(blocks) == text


def test_launch_says_why_a_device_it_was_given_stays_idle():
    """`launch --devices phone-a,phone-b,phone-c,laptop` plans through runtime.plan; its record explains the same way.
    (The issue's phone-a,phone-b,phone-c now uses all three: the planner's search over the simulated iteration
    time, issue 18, found the three-phone plan faster.)"""
    from edgeft.runtime import placement as planmod
    from edgeft.runtime.strategies import make_plan

    given = ["phone-a", "phone-b", "phone-c", "laptop"]
    spec = planmod.pick(load_cluster(HOME), given)
    table = planmod.make_table(resolve_arch("minilm-l6"), "pac", 8, 64, {}, "classification", 2)
    p = make_plan("hybrid", spec, table, 256, 32, None, None)
    used = {n for st in p.planner["stages"] for n in st["devices"]}
    assert used and used != set(given), "a given device left out"
    held = {n: m for st in p.planner["stages"] for n, m in zip(st["devices"], st["memory_bytes"])}
    reasons = idle_reasons(p.planner["stages"], p.planner["micro_batches"], spec, table, held)
    assert set(reasons) == set(given) - used
    assert all(f"instead of {p.planner['iteration_s']:.3g} s" in r for r in reasons.values())


def test_hybrid_plans_around_a_device_without_an_uplink_and_says_why_it_waits():
    """rate_mbps: 0 is a legal link (no uplink); the hybrid planner divided by it (ZeroDivisionError)."""
    spec = load_cluster(HOME)
    devices = [d.model_copy(update={"link": d.link.model_copy(update={"rate_mbps": 0.0, "distance_m": None})})
               if d.name in ("phone-a", "jetson") else d for d in spec.devices]
    spec = spec.model_copy(update={"devices": devices})
    plan, table = _plan(spec, "lora")
    assert plan.predicted["time_s"] < float("inf")
    reasons = idle_reasons(plan.stages, plan.micro_batches, spec, table, plan.predicted["memory_bytes"])
    for device in ("phone-a", "jetson"):
        if device in reasons:
            assert reasons[device].startswith("its link has rate 0 (no uplink)")
    only = spec.model_copy(update={"devices": [devices[0], devices[3]]})  # both without an uplink
    plan, table = _plan(only, "lora")
    assert [t.role for t in plan.tasks].count("stage") == 1
