"""Fast checks of the pieces: row splits, ownership, link model, device emulation, checkpoints, errors."""

import time

import pytest
import torch

from edgeft.errors import ConfigError, PlanError
from edgeft.runtime import checkpoint as ckpt
from edgeft.runtime.emulation import DeviceEmulator, DeviceMemoryError, LinkModel, LinkSpecRT, slowdown_for
from edgeft.runtime.strategies.common import split_rows
from edgeft.runtime.placement import owner_of
from edgeft.runtime.strategies.hybrid import share_rows


def test_share_rows_cover_and_follow_shares():
    parts = share_rows(10, [0.5, 0.3, 0.2])
    assert parts == [(0, 5), (5, 8), (8, 10)]
    assert share_rows(1, [0.5, 0.5]) in ([(0, 1), (1, 1)], [(0, 0), (0, 1)])
    assert split_rows(7, 3) == [(0, 3), (3, 5), (5, 7)]


def test_owner_is_stable_when_a_rank_leaves():
    shares = {0: 1.0, 1: 1.0, 2: 1.0}
    before = {f"s{i}": owner_of(f"s{i}", shares) for i in range(300)}
    after = {k: owner_of(k, {0: 1.0, 2: 1.0}) for k in before}
    moved = [k for k in before if before[k] != 1 and before[k] != after[k]]
    assert not moved  # only rank 1's samples move
    assert 70 < sum(1 for v in before.values() if v == 1) < 130


def test_link_model_queues_and_delays():
    clock = [100.0]
    lm = LinkModel({0: LinkSpecRT(8e6, 8e6, 0.01), 1: LinkSpecRT(16e6, 16e6, 0.0)}, clock=lambda: clock[0])
    a1 = lm.departure(0, 1, 1_000_000)  # 1 MB at 8 Mbit/s = 1 s, + 10 ms
    a2 = lm.departure(0, 1, 1_000_000)  # queued behind the first
    assert a1 == pytest.approx(101.01) and a2 == pytest.approx(102.01)
    assert lm.ring_allreduce_time([0, 1], 1_000_000) == pytest.approx(2 * (0.5 + 0.01))
    shaped = LinkModel({0: LinkSpecRT(8e6, 8e6, 0.0)}, shape_bandwidth=False)
    assert shaped.transmit_time(0, 1, 10**6) == 0.0  # tc mode: the kernel shapes bandwidth


def test_device_emulator_stretches_compute():
    emu = DeviceEmulator("slow", slowdown=4.0).start()
    t0 = time.perf_counter()
    with emu.compute():
        x = torch.randn(300, 300)
        for _ in range(30):
            x = torch.tanh(x @ x)
    wall = time.perf_counter() - t0
    assert wall >= 3.5 * emu.host_cpu_s and emu.compute_s == pytest.approx(4 * emu.host_cpu_s, rel=0.05)
    assert slowdown_for(1e9, 4e9) == (4.0, False) and slowdown_for(8e9, 4e9) == (1.0, True)


def test_memory_budget_error_names_device():
    emu = DeviceEmulator("phone-1", memory_budget_mb=1.0).start()
    with pytest.raises(DeviceMemoryError, match="phone-1.*over its 1 MB budget"):
        emu.check_memory("step 3")


def test_checkpoint_roundtrip_by_name(tmp_path):
    p = {"a": torch.nn.Parameter(torch.ones(3)), "b": torch.nn.Parameter(torch.zeros(2))}
    opt = torch.optim.AdamW(p.values(), lr=0.1)
    p["a"].grad, p["b"].grad = torch.ones(3), torch.ones(2)
    opt.step()
    ckpt.save_shard(tmp_path, 7, "r0", {"a": p["a"]}, opt, p)
    ckpt.save_shard(tmp_path, 7, "r1", {"b": p["b"]}, opt, p)
    assert ckpt.latest(tmp_path) is None  # not committed: not consistent
    ckpt.commit(tmp_path, 7, {"global_step": 7})
    path, meta = ckpt.latest(tmp_path)
    q = {"b": torch.nn.Parameter(torch.full((2,), 5.0))}  # a re-planned rank that now owns only b
    opt2 = torch.optim.AdamW(q.values(), lr=0.1)
    ckpt.load_into(path, q, opt2)
    assert torch.equal(q["b"].data, p["b"].data) and "exp_avg" in opt2.state[q["b"]]


def test_malformed_cluster_file_names_field(tmp_path):
    from edgeft.runtime.run import LaunchConfig, launch

    bad = tmp_path / "c.yaml"
    bad.write_text("name: x\ndevices:\n  - {name: a, compute: {flops: 1e9}, memory_gb: -1}\nservers: []\n")
    cfg = LaunchConfig(cluster=str(bad), task={"name": "sst2"}, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"(?s)c.yaml.*devices\[0\]\(a\)\.memory_gb.*greater than 0"):
        launch(cfg)
    (tmp_path / "y.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"y.yaml: line \d+, column \d+ is not valid YAML"):
        launch(cfg.model_copy(update={"cluster": str(tmp_path / "y.yaml")}))


@pytest.mark.parametrize("method,strategy,match", [
    ("pac", "split", r"method 'pac' cannot run under the split strategy: .*Use --strategy hybrid, or with split one "
                     r"of: bitfit, full, lora\."),
    ("pac", "deft", r"method 'pac' cannot run under the deft strategy"),
    ("prompt", "hybrid", r"method 'prompt' cannot run block by block .*Use one of: bitfit, full, lora, pac\."),
])
def test_a_method_its_strategy_cannot_run_is_refused_before_any_process_starts(tmp_path, method, strategy, match):
    """PAC under split or deft used to start every worker and die in each with an AttributeError."""
    from edgeft.runtime.run import LaunchConfig, launch

    cfg = LaunchConfig(cluster="examples/clusters/four-phones.yaml", model="smollm2-135m", task={"name": "sst2"},
                       method=method, strategy=strategy, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=match):
        launch(cfg)
    assert not (tmp_path / "run").exists()  # nothing written


def test_plan_that_does_not_fit_is_a_plan_error():
    from edgeft.models.arch import PRESETS
    from edgeft.planner.cluster import parse_cluster
    from edgeft.runtime.placement import make_table
    from edgeft.runtime.strategies import make_plan

    cluster = parse_cluster({"name": "tiny-phones", "devices": [
        {"name": f"p{i}", "compute": {"flops": 1e9}, "memory_gb": 0.05, "link": {"rate_mbps": 10}} for i in range(3)],
        "servers": [{"name": "edge", "compute": {"flops": 1e12}, "memory_gb": 8, "band_mhz": 20}]})
    table = make_table(PRESETS["smollm2-135m"], "lora", 8, 64, {})
    for strategy in ("hybrid", "deft", "split"):
        with pytest.raises(PlanError, match="memory|GiB|fit"):
            make_plan(strategy, cluster, table, samples=64, steps=8)


def test_unknown_strategy_and_bad_spec(tmp_path):
    from edgeft.runtime.spec import RunSpec
    from edgeft.runtime.strategies import get

    with pytest.raises(ConfigError, match="unknown strategy"):
        get("ring")
    (tmp_path / "spec.json").write_text("{\"strategy\": \"hybrid\"}")
    with pytest.raises(ConfigError, match=r"spec.json: invalid run spec \(\d+ problems\)\n  run_dir: required key is missing"):
        RunSpec.load(tmp_path / "spec.json")


def test_auto_time_scale_fits_the_whole_cluster_on_the_hosts_cores():
    from edgeft.runtime.run import auto_time_scale

    H = 40e9
    # one device alone: at least 2x slower than the host (the per-device rule binds)
    s, why = auto_time_scale([("a", "device", 30e9)], H, cores=2)
    assert s == pytest.approx(1.5) and why["host_speed_ranks"] == []
    # three devices at once on 2 cores: 2 x sum(r / (s H)) <= 2 -> s = 95/40, not 2 x 40/40 = 2
    ranks = [("p1", "device", 30e9), ("p2", "device", 25e9), ("p3", "device", 40e9)]
    s, why = auto_time_scale(ranks, H, cores=2)
    assert s == pytest.approx(95 / 40)
    assert 2 * sum(r / (s * H) for _, _, r in ranks) == pytest.approx(2.0)
    # with a GPU-class server that stays faster than the host: it takes a full core, the devices the rest
    s, why = auto_time_scale([("edge", "server", 15e12)] + ranks, H, cores=2)
    assert s == pytest.approx(2 * 95 / 40) and why["host_speed_ranks"] == ["edge"]
    assert why["demand_cores"] == pytest.approx(1.5)
    # more cores: back to the per-device rule
    s, _ = auto_time_scale([("edge", "server", 15e12)] + ranks, H, cores=16)
    assert s == pytest.approx(2.0)
    # slow devices need no dilation
    assert auto_time_scale([(f"q{i}", "device", 2e9) for i in range(4)], 80e9, cores=2)[0] == 1.0
    # a server that the devices' dilation already slows below the host is counted by its demand
    s, why = auto_time_scale([("srv", "server", 50e9), ("a", "device", 30e9)], H, cores=2)
    assert why["host_speed_ranks"] == [] and 2 * (50e9 + 30e9) / (s * H) <= 2 + 1e-9
    # host-speed ranks alone take every core: a clear error
    with pytest.raises(ConfigError, match="time_scale=auto"):
        auto_time_scale([("edge", "server", 15e12), ("a", "device", 1e9)], H, cores=1)


def test_hybrid_pac_fills_first_with_channel_norm_only():
    """PAC's default tap_norm=channel needs its statistics before the first step: hybrid fills the cache first."""
    from edgeft.methods import get_method

    def fills_first(method, options, strategy):
        return get_method(method, options).fills_cache_first(strategy)

    assert fills_first("pac", {}, "hybrid")
    assert not fills_first("pac", {"tap_norm": "token"}, "hybrid")
    assert not fills_first("pac", {"cache": "off"}, "hybrid")
    assert not fills_first("lora", {}, "hybrid") and not fills_first("pac", {}, "split")


def test_the_fill_batches_samples_of_similar_length_and_each_once():
    """The cache keeps each sample's own tokens, so the fill may group samples by length: every trained sample
    is filled exactly once, in batches of the training batch size, and the padding falls."""
    import random

    from edgeft.runtime.spec import RuntimeTrain
    from edgeft.runtime.strategies.hybrid import fill_batches

    cfg = RuntimeTrain(epochs=2, batch_size=4, seed=0)
    lengths = [random.Random(i).randint(3, 40) for i in range(18)]
    plain, grouped = fill_batches(18, cfg), fill_batches(18, cfg, lengths)
    assert sorted(i for b in grouped for i in b) == list(range(18)) and len(grouped) == len(plain) == 5
    assert [len(b) for b in grouped] == [4, 4, 4, 4, 2]
    widths = [lengths[i] for b in grouped for i in b]
    assert widths == sorted(widths)

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert padded(grouped) < padded(plain)


def test_the_ranks_timeout_covers_three_predicted_steps_and_a_too_short_one_is_refused(tmp_path):
    """full fine-tuning under deft sends the whole model down every round: ~58 s over a phone's emulated link
    (four-phones), so with the 60 s default a rank gave up waiting and the server was called lost."""
    from types import SimpleNamespace

    from edgeft.runtime.launcher import spec_for_attempt
    from edgeft.runtime.run import LaunchConfig, collective_timeout
    from edgeft.runtime.spec import RunSpec

    slow = SimpleNamespace(predicted={"step_s": 85.2, "emulated": {"step_s": 90.0}}, ranks=[], layout={})
    fast = SimpleNamespace(predicted={"step_s": 2.0}, ranks=[], layout={})
    default = LaunchConfig(cluster="c.yaml", task={"name": "sst2"})
    assert collective_timeout(default, slow) == 271.0  # 3 x the emulated step, which is what runs
    assert collective_timeout(default, fast) == 60.0
    with pytest.raises(ConfigError, match=r"timeout_s=60: a step of this plan is predicted to take 90 s.*at least 271"):
        collective_timeout(LaunchConfig(cluster="c.yaml", task={"name": "sst2"}, timeout_s=60), slow)
    slow.predicted["collective_timeout_s"] = 271.0
    base = RunSpec(run_dir=str(tmp_path), strategy="deft", model="m", task={"name": "sst2"}, ranks=[], layout={})
    assert spec_for_attempt(base, slow, 0, False).timeout_s == 271.0
    assert spec_for_attempt(base, fast, 0, False).timeout_s == base.timeout_s


def test_the_printed_plan_numbers_stages_as_the_run_table_and_the_planner_do():
    """launch printed 'stage 1: blocks 0..5' before the run and 'stage 0 replica 0' in its table after."""
    from types import SimpleNamespace

    from edgeft.runtime.run import LaunchConfig, describe_plan

    stages = [{"ranks": [0, 1], "shares": [0.5, 0.5], "blocks": [0, 3]},
              {"ranks": [2], "shares": [1.0], "blocks": [3, 6]}]
    plan = SimpleNamespace(layout={"stages": stages}, predicted={"epoch_s": 1.0},
                           ranks=[{"name": n, "kind": "device"} for n in ("p1", "p2", "p3")])
    text = describe_plan(plan, LaunchConfig(cluster="c.yaml", task={"name": "sst2"}), False)
    assert "p1           device  stage 0: blocks 0..2" in text and "p3           device  stage 1: blocks 3..5" in text


@pytest.mark.parametrize("kill, match", [
    (["phone-9", 1], r"--kill-device phone-9:1: no device named 'phone-9' in this run; choose one of phone-1"),
    (["phone-2", 2], r"--kill-device phone-2:2: the run has 2 training steps \(0..1\), so step 2 is never reached"),
])
def test_a_fault_injection_that_would_never_fire_is_refused_before_any_work(tmp_path, tiny_llama, kill, match):
    """A step past the run's end used to run the whole training without the fault; an unknown device was
    refused only after calibration."""
    from edgeft.runtime.run import LaunchConfig, launch

    cfg = LaunchConfig(cluster="examples/clusters/four-phones.yaml", model=str(tiny_llama), method="lora",
                       task={"name": "sst2", "train_samples": 16, "max_length": 16}, out=str(tmp_path / "run"),
                       train={"epochs": 1, "batch_size": 8}, kill_device_at_step=kill)
    with pytest.raises(ConfigError, match=match):
        launch(cfg)
    assert not (tmp_path / "run").exists()


def test_a_kill_of_a_device_the_plan_leaves_idle_is_refused_before_any_worker(tmp_path, tiny_llama):
    """--kill-device naming a device the hybrid plan leaves idle was refused only as the workers were about to start
    (after calibration, with plan.attempt0.json written). A --plan file is checked before calibration, i.e. before
    the run folder is written; a plan priced from this host's calibration right after planning."""
    import json

    from edgeft.models.arch import arch_from_hf_config
    from edgeft.planner.cluster import load_cluster
    from edgeft.runtime.placement import make_table
    from edgeft.runtime.run import LaunchConfig, launch
    from edgeft.runtime.strategies import make_plan

    phone = "compute: {flops: 3.0e10}, memory_gb: 4, link: {rate_mbps: 300, latency_ms: 3}"
    cluster = tmp_path / "slow.yaml"  # a device 30000x slower than the phones: the plan runs without it
    cluster.write_text(f"name: slow\ndevices:\n  - {{name: phone-1, {phone}}}\n  - {{name: phone-2, {phone}}}\n"
                       f"  - {{name: slow, {phone.replace('3.0e10', '1.0e6')}}}\n"
                       "servers:\n  - {name: edge, compute: {flops: 1.0e13}, memory_gb: 80, band_mhz: 20}\n")
    arch = arch_from_hf_config(json.loads((tiny_llama / "config.json").read_text()), str(tiny_llama))
    plan = make_plan("hybrid", load_cluster(cluster), make_table(arch, "lora", 8, 16, {}), samples=16, steps=2)
    assert "slow" not in {r["name"] for r in plan.ranks}
    path = tmp_path / "plan.attempt0.json"
    path.write_text(json.dumps(plan.to_dict(), default=float))
    match = r"--kill-device slow:0: 'slow' has no work in the plan .*the plan gives work to phone-[12]"
    for given in (str(path), None):
        run = tmp_path / f"run-{'plan' if given else 'planned'}"
        cfg = LaunchConfig(cluster=str(cluster), model=str(tiny_llama), method="lora", plan=given, out=str(run),
                           task={"name": "sst2", "train_samples": 16, "max_length": 16},
                           train={"epochs": 1, "batch_size": 8}, kill_device_at_step=["slow", 0])
        with pytest.raises(ConfigError, match=match):
            launch(cfg)
        if given:  # refused before calibration: the run folder was not even written
            assert not run.exists()
        else:  # the plan came from this host's calibration; no worker, namespace or plan file followed it
            events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
            assert "calibration" in events and "link_emulation" in events and "attempt_start" not in events
            assert not list(run.glob("plan.attempt*.json")) and not (run / "ranks").exists()


def test_kill_device_step_must_be_a_whole_number():
    """`--kill-device p2:abc` (or p2:-1) ended in a ValueError traceback from int()."""
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app
    from edgeft.runtime.run import LaunchConfig

    for bad in ("phone-2:abc", "phone-2:-1", "phone-2:3.5"):
        res = CliRunner().invoke(build_app(), ["launch", "--cluster", "examples/clusters/four-phones.yaml",
                                               "--task", "sst2", f"--kill-device={bad}"])
        assert isinstance(res.exception, ConfigError) and "STEP must be a whole number" in str(res.exception)
    with pytest.raises(ConfigError, match=r"kill_device_at_step: expected \[device name, step\]"):
        LaunchConfig.from_dict({"cluster": "c.yaml", "task": "sst2", "kill_device_at_step": ["phone-2"]})


def test_the_printed_plan_names_deft_and_split_blocks_as_the_run_table_does():
    """deft printed 'block(s) [0, 2]' (a half-open list) for what the table calls 0..1; split printed no blocks."""
    from types import SimpleNamespace

    from edgeft.runtime.run import LaunchConfig, describe_plan

    ranks = [{"name": n, "kind": k} for n, k in (("edge", "server"), ("p1", "device"), ("p2", "device"))]
    cfg = LaunchConfig(cluster="c.yaml", task={"name": "sst2"})
    deft = SimpleNamespace(layout={"server": 0, "devices": [1, 2], "blocks": {1: [0, 2], 2: [2, 6]}},
                           predicted={"epoch_s": 1.0}, ranks=ranks)
    text = describe_plan(deft, cfg, False)
    assert "p1           device  blocks 0..1" in text and "p2           device  blocks 2..5" in text
    split = SimpleNamespace(layout={"server": 0, "devices": [1, 2], "cut": 2}, predicted={"epoch_s": 1.0}, ranks=ranks)
    text = describe_plan(split, cfg, False)
    assert "edge         server  blocks 2.. and the head" in text and "p2           device  blocks 0..1" in text


def test_a_split_plan_refuses_a_device_without_an_uplink_by_name():
    """rate_mbps: 0 is a legal link; the split runtime plan divided by it (ZeroDivisionError)."""
    from edgeft.models.arch import PRESETS
    from edgeft.planner.cluster import parse_cluster
    from edgeft.runtime.placement import make_table
    from edgeft.runtime.strategies import make_plan

    cluster = parse_cluster({"name": "mute", "devices": [
        {"name": f"p{i}", "compute": {"flops": 1e10}, "memory_gb": 2, "link": {"rate_mbps": 10 * i}} for i in range(2)],
        "servers": [{"name": "edge", "compute": {"flops": 1e12}, "memory_gb": 8, "band_mhz": 20}]})
    table = make_table(PRESETS["minilm-l6"], "lora", 8, 32, {})
    with pytest.raises(PlanError, match=r"split: devices \['p0'\] have zero uplink rate.*--devices"):
        make_plan("split", cluster, table, samples=64, steps=8)


def test_a_plan_file_launch_cannot_run_is_refused_before_any_work(tmp_path, tiny_llama):
    """`--plan runs/plan/plan.json` (what `edgeft plan` writes) ended after host calibration in KeyError: 'ranks',
    with the run folder already claimed; a missing or non-JSON file gave a traceback."""
    import json

    from edgeft.runtime.run import LaunchConfig, launch

    report = tmp_path / "plan.json"
    report.write_text(json.dumps({"strategy": "hybrid", "tasks": [], "predicted": {}}))
    foreign = tmp_path / "plan.attempt0.json"
    foreign.write_text(json.dumps({"strategy": "hybrid", "layout": {}, "predicted": {},
                                   "ranks": [{"name": "laptop", "kind": "device"}]}))
    (tmp_path / "notes.txt").write_text("not json")
    unpriced = tmp_path / "unpriced.json"
    unpriced.write_text(json.dumps({"strategy": "hybrid", "layout": {}, "predicted": {}, "priced_for": {"steps": 2},
                                    "ranks": [{"name": "phone-1", "kind": "device"}]}))
    # make run's plan (SmolLM2's 30 blocks) given to another model, and a layout no launch wrote
    other_model = tmp_path / "other_model.json"
    stages = [{"blocks": [0, 30], "ranks": [0], "shares": [1.0]}]
    other_model.write_text(json.dumps({"strategy": "hybrid", "predicted": {}, "priced_for": {}, "layout": {
        "stages": stages}, "ranks": [{"name": "phone-1", "kind": "device"}]}))
    malformed = tmp_path / "malformed.json"
    malformed.write_text(json.dumps({"strategy": "hybrid", "predicted": {}, "layout": {"stages": [{"blocks": 3}]},
                                     "ranks": [{"name": "phone-1", "kind": "device"}]}))
    for path, match in ((report, "not a launch plan. --plan takes the plan.attempt0.json"),
                        (other_model, r"the plan places 30 blocks, and .* has 4: it was made for another model"),
                        (malformed, r"malformed.json: its layout is malformed"),
                        (unpriced, r"unpriced.json: priced_for must map .* steps_per_epoch a whole number above 0"),
                        (tmp_path / "gone.json", "no such file"), (tmp_path / "notes.txt", "not valid JSON"),
                        (foreign, r"the plan places devices \['laptop'\], this run has \['phone-1'")):
        cfg = LaunchConfig(cluster="examples/clusters/four-phones.yaml", model=str(tiny_llama), method="lora",
                           task={"name": "sst2", "train_samples": 16, "max_length": 16}, out=str(tmp_path / "run"),
                           train={"epochs": 1, "batch_size": 8}, plan=str(path))
        with pytest.raises(ConfigError, match=match):
            launch(cfg)
        assert not (tmp_path / "run").exists()


def test_a_time_scale_that_stops_or_reverses_time_is_refused():
    """--time-scale 0 ended in a ZeroDivisionError and -2 in a pydantic traceback about -1e+10 FLOP/s, both after
    host calibration."""
    from edgeft.runtime.run import LaunchConfig

    def config(scale):
        return LaunchConfig.from_dict({"cluster": "c.yaml", "task": {"name": "sst2"}, "time_scale": scale})

    for scale in (0, -2, float("inf")):
        with pytest.raises(ConfigError, match=r"time_scale: expected a number greater than 0 .* or 'auto'"):
            config(scale)
    assert config("auto").time_scale == "auto" and config(2.5).time_scale == 2.5


def test_a_knob_of_another_strategy_or_a_cut_past_the_model_is_refused_before_any_work(tmp_path, tiny_llama):
    """--cut under hybrid/deft and --micro-batches under deft/split were dropped without a word; --cut 99 under
    split was refused only after calibration, with the run folder already claimed."""
    from edgeft.runtime.run import LaunchConfig, launch

    base = {"cluster": "c.yaml", "task": {"name": "sst2"}}
    with pytest.raises(ConfigError, match="cut is only for --strategy split, not hybrid"):
        LaunchConfig.from_dict({**base, "strategy": "hybrid", "cut": 2})
    with pytest.raises(ConfigError, match="train.micro_batches is only for --strategy hybrid, not deft"):
        LaunchConfig.from_dict({**base, "strategy": "deft", "train": {"micro_batches": 2}})
    cfg = LaunchConfig(cluster="examples/clusters/four-phones.yaml", model=str(tiny_llama), method="lora",
                       strategy="split", cut=99, task={"name": "sst2", "train_samples": 16, "max_length": 16},
                       train={"epochs": 1, "batch_size": 8}, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"--cut 99: .* must be between 1 and 3"):
        launch(cfg)
    assert not (tmp_path / "run").exists()


def test_resume_with_other_trainables_is_refused_before_config_yaml_is_rewritten(tmp_path, tiny_llama):
    """`--resume --method bitfit` on a LoRA run rewrote config.yaml, calibrated, started the workers and failed in
    each with 'no saved value for ... the checkpoint belongs to another model or method'."""
    import yaml

    from edgeft.runtime.run import LaunchConfig, launch

    cfg = LaunchConfig(cluster="examples/clusters/four-phones.yaml", model=str(tiny_llama), method="lora",
                       task={"name": "sst2", "train_samples": 16, "max_length": 16}, out=str(tmp_path / "run"),
                       train={"epochs": 1, "batch_size": 8})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump()))
    again = cfg.model_copy(update={"method": "bitfit", "resume": True})
    with pytest.raises(ConfigError, match=r"--resume: the run in .* was started with other trainables \(method: "
                                          r"'lora' then, 'bitfit' now\)"):
        launch(again)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method"] == "lora"


def test_launch_takes_head_as_the_label_word_error_tells_a_user(monkeypatch):
    """The label-word error says 'pass --head classifier'; launch had no such option ('No such option: --head')."""
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app
    from edgeft.runtime import run

    seen = {}

    def stop_before_work(cfg, **_):
        seen["head"] = cfg.head
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(run, "launch", stop_before_work)
    args = ["launch", "--cluster", "examples/clusters/four-phones.yaml", "--task", "sst2"]
    res = CliRunner().invoke(build_app(), [*args, "--head", "classifier"])
    assert seen == {"head": "classifier"} and "stopped by the test" in str(res.exception)
    res = CliRunner().invoke(build_app(), [*args, "--head", "mlp"])
    assert isinstance(res.exception, ConfigError) and "head" in str(res.exception)


@pytest.mark.parametrize("max_length, evaluate, said", [
    (8, True, "--max-length 8 shortened 16 of 16 training rows and 8 of 8 dev rows ("),
    (8, False, "--max-length 8 shortened 16 of 16 training rows ("),
    (128, True, None),
])
def test_launch_says_when_max_length_shortens_rows_as_finetune_does(sst2_llama, max_length, evaluate, said):
    """finetune warned that --max-length cut rows (features.cut_notes); launch, which featurizes the training rows
    in _workload and left the dev rows to its workers, said nothing. Its notes count the dev rows it evaluates:
    dev_samples_eval of them, none without evaluate. (8 tokens: less than any SST-2 prompt.)"""
    from edgeft.runtime.run import LaunchConfig, _workload

    cfg = LaunchConfig(cluster="c.yaml", model=str(sst2_llama), method="lora",
                       task={"name": "sst2", "train_samples": 16, "dev_samples": 12, "max_length": max_length},
                       evaluate=evaluate, dev_samples_eval=8)
    notes = [n for n in _workload(cfg)[-1] if "--max-length" in n]
    assert len(notes) == (said is not None) and all(n.startswith(said) for n in notes)


def test_a_first_stop_signal_only_winds_down_when_asked_and_a_second_raises():
    """federate's stop ends Flower from within (its threads finish, then Ray shuts down): the first signal only calls
    wind_down; a second one raises at once. Without wind_down the first raises, as launch uses it."""
    import os
    import signal

    from edgeft.processes import Interrupted, stop_on_signals

    asked = []
    with pytest.raises(Interrupted) as stop:
        with stop_on_signals(wind_down=asked.append):
            os.kill(os.getpid(), signal.SIGTERM)
            assert asked == [signal.SIGTERM]  # no exception yet: the work ends itself
            os.kill(os.getpid(), signal.SIGHUP)
    assert stop.value.name == "SIGHUP" and asked == [signal.SIGTERM]
    with pytest.raises(Interrupted, match="SIGTERM"):
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_set_to_be_ignored_stays_ignored():
    """`nohup edgeft launch ...` ignores SIGHUP so the run outlives its terminal, and a non-interactive shell's
    background job ignores SIGINT; stop_on_signals put its own handler over both, so closing the terminal stopped
    a `nohup`ed run."""
    import os
    import signal

    from edgeft.processes import Interrupted, stop_on_signals

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with pytest.raises(Interrupted, match="SIGTERM"):
            with stop_on_signals():
                os.kill(os.getpid(), signal.SIGHUP)  # ignored, as nohup asked
                os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
