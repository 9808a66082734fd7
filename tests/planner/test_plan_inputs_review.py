"""Faults a new user's cluster, model or profile file met in `edgeft plan` (found by trying them, 2026-12-07): energy
priced two ways for one kappa, split plans that ignored memory, link latency left out of deft and pipeline sends,
names read as rich markup, and crashes on malformed model configs, profiles and --out."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeft.errors import ConfigError, PlanError
from edgeft.models.arch import PRESETS, arch_from_hf_config
from edgeft.planner import Workload, load_cluster, make_plan, resolve_arch

ROOT = Path(__file__).resolve().parents[2]
SERVER = "servers:\n  - {name: srv, compute: {cores: 5120, flops_per_cycle: 2, freq_ghz: [1.0, 1.5]}, memory_gb: %s, " \
         "band_mhz: 20, energy: {power_w: 300}}\n"


def cluster(tmp_path, devices: list[str], server_gb: float = 80, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text("name: t\n" + SERVER % server_gb + "devices:\n" + "".join(f"  - {d}\n" for d in devices))
    return path


def cycle_device(name: str, memory_gb: float = 8, extra: str = "") -> str:
    return (f"{{name: '{name}', compute: {{cores: 8, flops_per_cycle: 2, freq_ghz: [1.0, 1.0]}}, memory_gb: {memory_gb}, "
            f"link: {{distance_m: 60}}, energy: {{kappa: 1.0e-27}}{extra}}}")


def test_one_kappa_prices_a_devices_compute_energy_alike_under_deft_and_split(tmp_path):
    """deft multiplied kappa f^3 by the core count (8x here, 1024x on a Jetson-class board); split, and the docs'
    '1e-27 is 1 W at 1 GHz', do not."""
    spec = load_cluster(cluster(tmp_path, [cycle_device("d1"), cycle_device("d2")]))
    deft = make_plan(spec, resolve_arch("minilm-l6"), Workload(), "deft")
    for task in deft.tasks:
        if task.compute_s:
            comm_energy = (task.energy_j - 1.0 * task.compute_s)  # 1 W of compute at 1 GHz, the rest is the uplink
            assert 0 <= comm_energy < 0.5 * task.energy_j, (task.energy_j, task.compute_s)


def test_split_gives_a_device_no_more_layers_than_its_memory_holds_and_refuses_one_that_holds_none(tmp_path):
    roomy = make_plan(load_cluster(cluster(tmp_path, [cycle_device("big", 8)], name="a.yaml")),
                      resolve_arch("smollm2-135m"), Workload(method="full"), "split", split_settings=None)
    # a device at 0.5 GiB: full fine-tuning state of a few SmolLM2 layers at most
    tight = make_plan(load_cluster(cluster(tmp_path, [cycle_device("small", 0.5)], name="b.yaml")),
                      resolve_arch("smollm2-135m"), Workload(method="full"), "split")
    task = tight.tasks[0]
    assert 0 < task.memory_bytes <= 0.5 * 2**30
    assert roomy.tasks[0].memory_bytes > 0
    with pytest.raises(PlanError, match=r"devices\[0\]\(tiny\)\.memory_gb = 0\.001 holds not even"):
        make_plan(load_cluster(cluster(tmp_path, [cycle_device("tiny", 0.001)], name="c.yaml")),
                  resolve_arch("smollm2-135m"), Workload(method="full"), "split")
    with pytest.raises(PlanError, match=r"servers\[0\]\(srv\)\.memory_gb = 0\.01 cannot hold"):
        make_plan(load_cluster(cluster(tmp_path, [cycle_device("d", 8)], server_gb=0.01, name="d.yaml")),
                  resolve_arch("smollm2-135m"), Workload(method="full"), "split")


def test_split_keeps_more_layers_on_the_devices_when_the_server_cannot_hold_the_rest(tmp_path):
    """The solver did not know the server's memory: a plan that put most layers on the server was refused afterwards,
    though the devices could keep more of them. Now a floor on the split points rises until the server holds its
    part, and the solver plans within it."""
    arch, devices = resolve_arch("smollm2-135m"), [cycle_device(f"d{i}", 8) for i in range(3)]
    roomy = make_plan(load_cluster(cluster(tmp_path, devices, name="a.yaml")), arch, Workload(method="full"), "split")
    need = roomy.predicted["server_memory_bytes"]["srv"]
    cap_gb = round(0.5 * need / 2**30, 3)
    tight = make_plan(load_cluster(cluster(tmp_path, devices, server_gb=cap_gb, name="b.yaml")), arch,
                      Workload(method="full"), "split")
    assert tight.predicted["server_memory_bytes"]["srv"] <= cap_gb * 2**30
    assert min(t.split_layer for t in tight.tasks) > max(t.split_layer for t in roomy.tasks)
    assert all(t.memory_bytes <= 8 * 2**30 for t in tight.tasks)
    assert tight.predicted["objective"] > roomy.predicted["objective"]  # the memory costs time or energy


def test_a_links_latency_is_paid_by_deft_rounds_and_pipeline_sends(tmp_path):
    def flops_device(name, latency_ms, memory_gb=8):
        return (f"{{name: {name}, compute: {{flops: 1.0e11}}, memory_gb: {memory_gb}, "
                f"link: {{rate_mbps: 100, latency_ms: {latency_ms}}}}}")

    arch = resolve_arch("minilm-l6")
    rounds = [make_plan(load_cluster(cluster(tmp_path, [flops_device("d1", ms), flops_device("d2", ms)],
                                             name=f"l{ms}.yaml")), arch, Workload(), "deft").predicted["time_s"]
              for ms in (0, 1000)]
    assert rounds[1] - rounds[0] == pytest.approx(2.0, rel=1e-6)  # the upload and the broadcast: 1 s each
    # devices that hold a few layers each: a pipeline, whose every boundary send pays both ends' latency
    small = [flops_device(n, 0, 0.2) for n in "abcd"]
    slow = [flops_device(n, 1000, 0.2) for n in "abcd"]
    plans = [make_plan(load_cluster(cluster(tmp_path, devs, name=f"p{i}.yaml")), arch, Workload(method="full"),
                       "hybrid", samples=64) for i, devs in enumerate((small, slow))]
    comm = [[t.comm_s for t in p.tasks if t.role == "stage"] for p in plans]
    assert len(comm[0]) > 1 and max(comm[1]) >= max(comm[0]) + 1.0


def _plan_cli(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "300"}  # cells whole, whatever the terminal
    return subprocess.run([sys.executable, "-m", "edgeft.cli", "plan", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env=env)


def test_device_names_and_errors_print_as_written_not_as_rich_markup(tmp_path):
    """`phone[/a]` crashed the printer (MarkupError) after plan.json was written; `lab[gpu]` printed as `lab`; an
    error's `[2.4, 0.5]` vanished."""
    flops = "{name: '%s', compute: {flops: 1.0e11}, memory_gb: 8, link: {rate_mbps: 100}}"
    path = cluster(tmp_path, [flops % "phone[/a]", flops % "lab[gpu]"])
    res = _plan_cli("--cluster", str(path), "--model", "minilm-l6", "--out", str(tmp_path / "o"), "--no-plots")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "phone[/a]" in res.stdout and "lab[gpu]" in res.stdout
    bad = cluster(tmp_path, ["{name: d, compute: {cores: 8, flops_per_cycle: 2, freq_ghz: [2.4, 0.5]}, "
                             "memory_gb: 8, link: {rate_mbps: 100}}"], name="bad.yaml")
    res = _plan_cli("--cluster", str(bad), "--model", "minilm-l6", "--out", str(tmp_path / "o2"))
    assert res.returncode == 2 and "[2.4, 0.5]" in res.stderr, res.stderr


def test_out_naming_a_file_is_refused_before_solving(tmp_path):
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    target = tmp_path / "plan.txt"
    target.write_text("mine")
    res = CliRunner().invoke(build_app(), ["plan", "--cluster", str(ROOT / "examples/clusters/home-lab.yaml"),
                                           "--model", "minilm-l6", "--out", str(target)])
    assert isinstance(res.exception, ConfigError) and "--out names a file" in str(res.exception)
    assert target.read_text() == "mine"


@pytest.mark.parametrize("cfg, says", [
    ([1, 2], "expected a JSON object"),
    ({"model_type": "llama", "num_hidden_layers": 4.7, "hidden_size": 64, "num_attention_heads": 4,
      "intermediate_size": 128, "vocab_size": 100}, "num_hidden_layers = 4.7 must be a positive whole number"),
    ({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
      "intermediate_size": None, "vocab_size": 100}, "missing key 'intermediate_size'"),
    ({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
      "num_key_value_heads": 3, "intermediate_size": 128, "vocab_size": 100}, "not a multiple of num_key_value_heads"),
    ({"model_type": "gpt2", "n_layer": 2}, "model_type 'gpt2' is not one edgeft reads"),
])
def test_a_malformed_model_config_is_named_not_a_traceback(cfg, says):
    with pytest.raises(ConfigError, match="model config m: .*" + says.replace("(", r"\(").replace("[", r"\[")):
        arch_from_hf_config(cfg, "m")


def test_distilbert_configs_are_read_with_their_own_key_names():
    arch = arch_from_hf_config({"model_type": "distilbert", "n_layers": 6, "dim": 768, "n_heads": 12,
                                "hidden_dim": 3072, "vocab_size": 30522, "max_position_embeddings": 512}, "distil")
    assert (arch.num_layers, arch.hidden_size, arch.num_heads, arch.intermediate_size) == (6, 768, 12, 3072)


@pytest.mark.parametrize("edit, says", [
    (lambda p: p.update(blocks=p["blocks"][:3]), "blocks holds 3 entries for a model of 6 layers"),
    (lambda p: p["blocks"][2].update(fwd_s=-1.0), r"blocks\[2\]\.fwd_s = -1\.0 must be a non-negative number"),
    (lambda p: p.pop("machine"), "machine is missing"),
    (lambda p: p["blocks"][0].pop("act_saved_bytes"), r"blocks\[0\]\.act_saved_bytes is missing"),
])
def test_a_cut_or_hand_edited_profile_is_refused_naming_the_field(tmp_path, edit, says):
    from edgeft.measure.profile import load_profile

    prof = json.loads((ROOT / "bench/results/planner/profile_minilm-l6_lora.json").read_text())
    assert load_profile(ROOT / "bench/results/planner/profile_minilm-l6_lora.json")["arch"]["num_layers"] == 6
    edit(prof)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prof))
    with pytest.raises(ConfigError, match=says):
        load_profile(path)


def test_the_presets_still_match_their_config_files():
    from edgeft.models.backbone import resolve

    for name in ("minilm-l6", "smollm2-135m"):
        folder, _ = resolve(name)
        assert arch_from_hf_config(json.loads((Path(folder) / "config.json").read_text()), name) == PRESETS[name]


def test_idle_reasons_name_the_link_that_slows_the_all_reduce_and_do_not_ask_for_blocks_that_cannot_be(tmp_path):
    from edgeft.planner.strategies import explain_idle
    from edgeft.runtime.placement import make_table

    arch = resolve_arch("minilm-l6")
    flops = "{name: %s, compute: {flops: 1.0e11}, memory_gb: 8, link: {rate_mbps: %s}}"
    spec = load_cluster(cluster(tmp_path, [flops % ("d1", 0), flops % ("d2", 100)], name="z.yaml"))
    plan = make_plan(spec, arch, Workload(), "hybrid")
    why = explain_idle(plan, spec, make_table(arch, "lora", 8, 128, {}))["d2"]
    assert "slowest link among them (d1's 0 Mbit/s)" in why, why  # it blamed d2's own 100 Mbit/s link
    spec = load_cluster(cluster(tmp_path, [flops % (f"d{i}", 100) for i in range(8)], name="e.yaml"))
    plan = make_plan(spec, arch, Workload(), "deft", num_blocks=6)
    reasons = explain_idle(plan, spec, make_table(arch, "lora", 8, 128, {}))
    assert len(reasons) == 2 and all("one per layer already: the model has 6" in r for r in reasons.values())


def test_small_planner_inputs_named(tmp_path):
    """An empty device name printed a blank row; a zero-rate link was named only as ['d1']; --seq-len beyond the
    model's positions was planned; --w-e 0 printed numpy's divide-by-zero warning."""
    import warnings

    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    flops = "{name: '%s', compute: {flops: 1.0e11}, memory_gb: 8, link: {rate_mbps: %s}}"
    with pytest.raises(ConfigError, match="a name cannot be empty"):
        load_cluster(cluster(tmp_path, [flops % ("", 100)], name="n.yaml"))
    spec = load_cluster(cluster(tmp_path, [flops % ("d1", 0), flops % ("d2", 100)], name="z.yaml"))
    with pytest.raises(PlanError, match=r"devices\[0\]\(d1\)\.link: zero uplink rate"):
        make_plan(spec, resolve_arch("minilm-l6"), Workload(), "deft")
    res = CliRunner().invoke(build_app(), ["plan", "--cluster", str(ROOT / "examples/clusters/home-lab.yaml"),
                                           "--model", "minilm-l6", "--seq-len", "100000", "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, ConfigError) and "longer than minilm-l6 reads (512 positions)" in str(res.exception)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from edgeft.planner.split_model import SplitSettings

        arch = resolve_arch("smollm2-135m")
        make_plan(load_cluster(ROOT / "examples/clusters/home-lab.yaml"), arch, Workload(), "split",
                  split_settings=SplitSettings(batch=8, hidden=arch.hidden_size, layers=arch.num_layers, w_e=0.0))


def test_a_links_latency_is_paid_by_each_split_users_upload(tmp_path):
    arch = resolve_arch("minilm-l6")
    times = []
    for ms in (0, 1000):
        devices = [cycle_device(f"d{i}", 8, "").replace("{distance_m: 60}", f"{{distance_m: 60, latency_ms: {ms}}}")
                   for i in range(2)]
        plan = make_plan(load_cluster(cluster(tmp_path, devices, name=f"s{ms}.yaml")), arch, Workload(), "split")
        times.append(plan.predicted["time_s"])
    assert times[1] - times[0] == pytest.approx(2.0, rel=1e-3)  # two users, one upload each per step


def test_planning_errors_name_the_cluster_file_not_only_its_name(tmp_path):
    """The README says an impossible cluster stops 'with an error naming the file and field'; planning errors named
    the cluster's `name:` only ('cluster t: device ...')."""
    path = cluster(tmp_path, [cycle_device("tiny", 0.001)], name="mine.yaml")
    with pytest.raises(PlanError) as err:
        make_plan(load_cluster(path), resolve_arch("smollm2-135m"), Workload(method="full"), "split")
    assert str(err.value).startswith(f"{path}: devices[0](tiny).memory_gb")
