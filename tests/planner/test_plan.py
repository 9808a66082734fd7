"""Plans end to end: JSON round trip, predict_time, hybrid DP and 1F1B, costs, the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edgeft.planner import Plan, Workload, analytic_costs, load_cluster, make_plan, predict_time, resolve_arch
from edgeft.models.arch import PRESETS
from edgeft.models.arch import block_params
from edgeft.planner.hybrid_pricing import simulate_1f1b

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "examples" / "clusters" / "home-lab.yaml"


def test_block_params_match_known_models():
    # per-layer parameter counts of the real checkpoints (from their state dicts)
    assert block_params(PRESETS["minilm-l6"])[0] == 1_774_464
    assert block_params(PRESETS["smollm2-135m"])[0] == 3_540_096


@pytest.mark.parametrize("strategy,method", [("deft", "lora"), ("hybrid", "pac"), ("hybrid", "full")])
def test_plan_roundtrip_and_prediction(strategy, method, tmp_path):
    plan = make_plan(load_cluster(HOME), resolve_arch("smollm2-135m"), Workload(method=method), strategy)
    path = tmp_path / "plan.json"
    plan.to_json(path)
    back = Plan.from_json(path)
    assert back.to_dict() == Plan.from_json(plan.to_json()).to_dict()
    assert predict_time(back) == pytest.approx(plan.predicted["time_s"], rel=1e-9)
    busy = [t for t in back.tasks if t.role != "idle"]
    # twice as fast devices: the predicted time falls
    faster = {t.device: 2 * t.work_flops / t.compute_s for t in busy if t.compute_s}
    assert predict_time(back, device_flops=faster) < plan.predicted["time_s"]
    assert min(plan.baselines.values()) >= 0


def test_hybrid_not_worse_than_its_baselines():
    plan = make_plan(load_cluster(HOME), resolve_arch("smollm2-135m"), Workload(method="full", batch=16), "hybrid")
    assert plan.predicted["time_s"] <= min(plan.baselines.values()) * (1 + 1e-9)


def test_1f1b_matches_closed_form_for_equal_stages():
    for S, M in [(1, 4), (3, 4), (4, 8), (2, 1)]:
        total, events = simulate_1f1b([1.0] * S, [2.0] * S, [0.0] * S, M)
        assert total == pytest.approx((M + S - 1) * 3.0)
        assert len(events) == 2 * S * M


def test_costs_grow_with_batch_and_lora_is_lighter_than_full():
    arch = resolve_arch("smollm2-135m")
    lo = analytic_costs(arch, Workload(method="lora"))
    full = analytic_costs(arch, Workload(method="full"))
    assert lo.trainable.sum() < full.trainable.sum() / 100
    assert lo.bwd_train[0] < full.bwd_train[0]
    assert np.allclose(lo.scaled(16).fwd, 2 * lo.fwd)


def _plan_app():
    """The `edgeft plan` command on a Typer app of its own, as the CLI registers it."""
    from edgeft.cli.plan import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _cb():
        pass

    return app


def test_cli_plan_writes_json_and_pngs(tmp_path):
    app = _plan_app()
    res = CliRunner().invoke(app, ["plan", "--cluster", str(HOME), "--model", "minilm-l6", "--strategy", "deft",
                                   "--out", str(tmp_path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "block-trainer" in res.output
    assert (tmp_path / "plan.json").is_file() and (tmp_path / "placement.png").stat().st_size > 1000
    bad = CliRunner().invoke(app, ["plan", "--cluster", str(tmp_path / "nope.yaml"), "--model", "minilm-l6"])
    assert bad.exit_code != 0 and "not found" in str(bad.exception)
    # `edgeft plan` sizes LoRA as `edgeft launch` does (the layers edgeft's lora wraps, not PEFT's q/v default)
    from edgeft.methods.peft_methods import LORA_TARGETS

    saved = json.loads((tmp_path / "plan.json").read_text())
    assert tuple(saved["workload"]["lora_targets"]) == tuple(LORA_TARGETS["bert"])
    arch, spec = resolve_arch("minilm-l6"), load_cluster(HOME)
    qv_only = make_plan(spec, arch, Workload(batch=8, seq_len=128, method="lora"), "deft")
    assert saved["predicted"]["time_s"] != pytest.approx(qv_only.predicted["time_s"], rel=1e-3)


@pytest.mark.parametrize("args, says", [
    (["--seq-len", "0"], "--seq-len must be at least 1, not 0"),  # was clamped to 1 and planned silently
    (["--samples", "-5"], "--samples must be at least 1, not -5"),
    (["--blocks", "0"], "--blocks must be at least 1, not 0"),  # was read as 'no --blocks'
    (["--strategy", "foo"], "unknown strategy 'foo': choose one of deft, split, hybrid"),
    (["--strategy", "split", "--w-t", "0"], "--w-t (split: weight of delay) must be greater than 0"),  # traceback
    (["--strategy", "split", "--w-e", "-1"], "--w-e must be 0 or more, not -1"),  # traceback
])
def test_cli_plan_refuses_impossible_numbers_by_option_name(tmp_path, args, says):
    app = _plan_app()
    res = CliRunner().invoke(app, ["plan", "--cluster", str(HOME), "--model", "minilm-l6", "--no-plots",
                                   "--out", str(tmp_path), *args])
    assert res.exit_code != 0 and says in str(res.exception), (res.output, res.exception)
    assert not (tmp_path / "plan.json").exists()


def _split_layer_flops(plan) -> set[float]:
    return {round(t.work_flops / t.split_layer) for t in plan.tasks}


def test_the_split_plan_prices_a_layer_by_the_method_and_a_profile_not_the_papers_full_fine_tuning(tmp_path):
    """The split planner priced every layer with the paper's psi (72 B d h^2 + 12 B d^2 h, full fine-tuning of a
    GPT-shaped block), so a LoRA plan and a full one cost the same and `--profile` was refused as ignored."""
    from edgeft.measure.profile import profile_model
    from tiny_models import make_tiny_model

    arch = resolve_arch("smollm2-135m")
    psi = {m: _split_layer_flops(make_plan(load_cluster(HOME), arch, Workload(method=m), "split")) for m in
           ("full", "lora")}
    full_table = analytic_costs(arch, Workload(method="full"))
    assert psi["full"] == {round(full_table.fwd[0] + full_table.bwd_train[0])}
    assert len(psi["lora"]) == 1 and 0.55 < psi["lora"].pop() / psi["full"].pop() < 0.8  # no weight gradients

    folder = make_tiny_model(tmp_path / "llama", "llama", layers=2)
    (tmp_path / "p.json").write_text(json.dumps(profile_model(str(folder), method="lora", batch=1, seq_len=8,
                                                              reps=1)))
    app = _plan_app()
    planned = {}
    for name, extra in (("analytic", []), ("measured", ["--profile", str(tmp_path / "p.json")])):
        res = CliRunner().invoke(app, ["plan", "--cluster", str(HOME), "--model", str(folder), "--strategy", "split",
                                       "--batch", "1", "--seq-len", "8", "--no-plots", "--out", str(tmp_path / name),
                                       *extra])
        assert res.exit_code == 0, (res.output, res.exception)
        planned[name] = Plan.from_json(tmp_path / name / "plan.json")
    assert planned["measured"].solver["costs"].startswith("profile:")
    assert _split_layer_flops(planned["measured"]) != _split_layer_flops(planned["analytic"])


@pytest.mark.parametrize("args, says", [
    (["--strategy", "hybrid", "--blocks", "3"], "--blocks is only for --strategy deft, not hybrid"),
    (["--strategy", "deft", "--samples", "64"], "--samples is only for --strategy hybrid, not deft"),
    (["--strategy", "hybrid", "--w-e", "2"], "--w-e is only for --strategy split, not hybrid"),
])
def test_cli_plan_refuses_an_option_of_another_strategys_planner(tmp_path, args, says):
    """Each was read by one planner only and dropped by the others: the same plan came out."""
    app = _plan_app()
    res = CliRunner().invoke(app, ["plan", "--cluster", str(HOME), "--model", "minilm-l6", "--no-plots",
                                   "--out", str(tmp_path), *args])
    assert res.exit_code != 0 and says in str(res.exception), (res.output, res.exception)


def test_an_option_left_at_its_default_is_not_given_whichever_click_reports_it():
    """typer 0.2x carries its own copy of click (`typer._click`), whose ParameterSource is another enum than click's:
    compared with click's DEFAULT, every default read as given and `edgeft plan` refused every strategy (seen on the
    GPU image, typer 0.27.2). The check reads the source by name, so any copy of the enum works."""
    import enum
    from types import SimpleNamespace

    from edgeft.cli.plan import _check_strategy_options
    from edgeft.errors import ConfigError

    copy = enum.Enum("ParameterSource", "COMMANDLINE ENVIRONMENT DEFAULT DEFAULT_MAP PROMPT")
    sources = {name: copy.DEFAULT for name in ("blocks", "samples", "w_t", "w_e", "w_s")}
    ctx = SimpleNamespace(get_parameter_source=sources.get)
    for strategy in ("deft", "split", "hybrid"):
        _check_strategy_options(ctx, strategy)
    sources["samples"] = copy.COMMANDLINE
    _check_strategy_options(ctx, "hybrid")
    with pytest.raises(ConfigError, match="--samples is only for --strategy hybrid, not deft"):
        _check_strategy_options(ctx, "deft")
