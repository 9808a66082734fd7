"""The runtime's side of prediction: what calibration measures, the split step's device all-reduce,
and the prediction for the cluster as emulated (ranks faster than the host run at its speed)."""

import pytest
import torch

from edgeft.models.arch import PRESETS
from edgeft.planner.cluster import parse_cluster
from edgeft.measure import calibrate as cal
from edgeft.runtime.placement import emulated_cluster, make_table, plan_split
from edgeft.runtime.strategies import make_plan, repredict


def _cluster(server_flops=1.5e13, latency_ms=0.0):
    return parse_cluster({"name": "t", "devices": [
        {"name": f"p{i}", "compute": {"flops": 5e9}, "memory_gb": 8,
         "link": {"rate_mbps": 40 + 20 * i, "latency_ms": latency_ms}} for i in range(2)],
        "servers": [{"name": "edge", "compute": {"flops": server_flops}, "memory_gb": 80, "band_mhz": 20}]})


def _bench(cached: bool):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 2))

    def loss_fn(m, batch):
        return m(batch["input_ids"]).mean(1).logsumexp(-1).mean()

    batches = [{"input_ids": torch.randint(0, 50, (4, w))} for w in (6, 10)]
    return cal.Bench(model, loss_fn, batches, lambda: {"x": torch.zeros(8, 10)},
                     [{"input_ids": torch.randint(0, 50, (8, w))} for w in (6, 7)] if cached else None)


def test_calibration_measures_the_run_shapes_and_the_step_costs():
    out = cal.measure(_bench(cached=True), lambda b: 1e6 * b["input_ids"].numel(), repeats=2)
    assert out["rows"] == 4 and out["seq_len"] == 8  # the given batches' rows and mean padded width
    assert out["step_flops"] == pytest.approx(1e6 * 4 * 8)
    # FLOP/s of a step as a burst after idling, as every emulated rank computes (see calibrate.IDLE_GAP_S)
    assert out["idle_factor"] >= 1.0
    assert out["host_flops"] == pytest.approx(out["step_flops"] / out["step_cpu_s"] / out["idle_factor"])
    assert out["step_fixed_s"] > 0
    assert out["cached_rows"] == 8
    # the cached step as a cost per call plus a cost per row, through one row and all 8 rows
    per = (out["cached_step_cpu_s"] - out["cached_one_row_cpu_s"]) / 7
    assert out["cached_step_flops"] == pytest.approx(max(per, 0) * out["host_flops"])
    # the call cost is what one row takes beyond its own row cost
    assert out["cached_call_flops"] == pytest.approx(max(out["cached_one_row_cpu_s"] - max(per, 0), 0) * out["host_flops"])
    # and at every row count a device can get (1 .. 8), as effective FLOPs, the ends being the line's points
    assert len(out["cached_rows_cpu_s"]) == 8 and len(out["cached_rows_flops"]) == 8
    assert out["cached_idle_factor"] >= 1.0
    assert out["cached_rows_cpu_s"][0] == out["cached_one_row_cpu_s"]
    assert out["cached_rows_cpu_s"][-1] == out["cached_step_cpu_s"]
    assert out["cached_rows_flops"] == pytest.approx([c * out["host_flops"] for c in out["cached_rows_cpu_s"]])
    assert "cached_step_flops" not in cal.measure(_bench(cached=False), lambda b: 1e6, repeats=1)


def test_cached_step_is_timed_densely_at_few_rows_and_interpolated_beyond():
    # every count up to 8 rows (where the cost is least linear), then ~1.5x apart, ending at the batch's rows
    assert cal.measured_row_counts(5) == [1, 2, 3, 4, 5]
    assert cal.measured_row_counts(32) == [1, 2, 3, 4, 5, 6, 7, 8, 12, 18, 27, 32]
    # the value at every row count: the measured ones kept, the rest on the line between their neighbours
    by_rows = cal.fill_between([1, 2, 8, 12], [0.5, 1.0, 4.0, 2.0])
    assert len(by_rows) == 12
    assert by_rows[:2] == [0.5, 1.0] and by_rows[7] == 4.0 and by_rows[11] == 2.0
    assert by_rows[4] == pytest.approx(2.5) and by_rows[9] == pytest.approx(3.0)
    # measured: a 12-row cached batch gets a cost at each of its 12 row counts, timed at 9 of them
    bench = _bench(cached=True)
    bench.cached_batches = [{"input_ids": torch.randint(0, 50, (12, w))} for w in (6, 7)]
    out = cal.measure(bench, lambda b: 1e6 * b["input_ids"].numel(), repeats=1)
    assert out["cached_rows_timed"] == [1, 2, 3, 4, 5, 6, 7, 8, 12]
    assert len(out["cached_rows_cpu_s"]) == 12
    c = out["cached_rows_cpu_s"]
    assert c[9] == pytest.approx(c[7] + (c[11] - c[7]) / 2)


@pytest.mark.parametrize("grad_sync,element_bytes", [(None, 2), ("bf16", 2), ("fp32", 4)])
def test_split_step_includes_the_devices_all_reduce(grad_sync, element_bytes):
    table = make_table(PRESETS["minilm-l6"], "lora", 8, 24, {}, grad_sync=grad_sync)  # None: the default, bf16
    cl = _cluster(latency_ms=3.0)
    p = plan_split(cl, table, steps=4, cut=2)
    ring = p.predicted["per_device"][0]["allreduce_s"]
    nbytes = table.trainable[:2].sum() * element_bytes  # the gradients of the device side, in grad_sync's dtype
    assert ring == pytest.approx(2 * (nbytes / 2 * 8 / 40e6 + 2 * 0.003))
    per = p.predicted["per_device"]
    assert p.predicted["step_s"] == pytest.approx(
        max(d["compute_s"] * 2 / 3 + d["up_s"] for d in per) + p.predicted["server_compute_s"]
        + max(d["down_s"] + d["compute_s"] / 3 for d in per) + ring)


def test_prediction_for_the_emulated_cluster_caps_ranks_at_the_host():
    table = make_table(PRESETS["minilm-l6"], "lora", 8, 24, {})
    cl, host = _cluster(), 20e9
    emu = emulated_cluster(cl, host)
    assert [d.compute.rate() for d in emu.devices] == [5e9, 5e9]  # slower than the host: unchanged
    assert emu.servers[0].compute.rate() == host  # the GPU-class server runs at the host's speed
    p = make_plan("split", cl, table, samples=32, steps=4)
    again = repredict(p, emu, table, 4)
    srv = p.predicted["server_compute_s"]
    assert again["server_compute_s"] == pytest.approx(srv * 1.5e13 / host)
    assert again["epoch_s"] - p.predicted["epoch_s"] == pytest.approx(4 * (again["server_compute_s"] - srv))
    d = make_plan("deft", cl, table, samples=32, steps=4)
    assert repredict(d, emu, table, 4)["epoch_s"] == pytest.approx(d.predicted["epoch_s"])  # no server compute
    assert repredict(make_plan("hybrid", cl, table, samples=32, steps=4), emu, table, 4) is None


def test_shaper_sends_the_servers_messages_down_each_link_at_once():
    from edgeft.runtime.emulation import LinkModel, LinkSpecRT

    clock = [0.0]
    lm = LinkModel({0: LinkSpecRT(0.0, 0.0, 0.0), 1: LinkSpecRT(8e6, 8e6, 0.0), 2: LinkSpecRT(16e6, 16e6, 0.0)},
                   clock=lambda: clock[0])
    assert lm.departure(0, 1, 1_000_000) == pytest.approx(1.0)  # 1 MB down device 1's 8 Mbit/s
    assert lm.departure(0, 2, 1_000_000) == pytest.approx(0.5)  # not queued behind it: another downlink
    assert lm.departure(0, 1, 1_000_000) == pytest.approx(2.0)  # the same downlink queues
    assert lm.departure(1, 0, 1_000_000) == pytest.approx(1.0)  # a device's uplink is its own queue


def test_cached_epochs_wait_for_each_steps_busiest_owner():
    import dataclasses

    from edgeft.runtime.placement import RuntimePlan, cached_epochs_s
    from edgeft.runtime.placement import owner_of

    cl = _cluster()  # two devices at 5 GFLOP/s
    table = dataclasses.replace(make_table(PRESETS["minilm-l6"], "pac", 4, 24, {}), cached_step_flops=1e9,
                                cached_call_flops=2e9, step_fixed_s=0.01, trainable_total=1000)
    ranks = [{"name": d.name} for d in cl.devices]
    plan = RuntimePlan("hybrid", ranks, {"cached_shares": {"0": 0.5, "1": 0.5}}, {})
    ids = [f"s{i}" for i in range(16)]
    epochs = [[list(range(0, 4)), list(range(4, 8))], [list(range(8, 16))]]
    got = cached_epochs_s(plan, cl, table, ids, epochs)
    ar = 2 * (1000 * 2 / 2 * 8 / 40e6)  # two devices, the slower link; 2 bytes a gradient (grad_sync bf16)
    for batches, t in zip(epochs, got):
        busiest = [max(sum(owner_of(ids[i], {0: 0.5, 1: 0.5}) == r for i in b) for r in (0, 1)) for b in batches]
        assert t == pytest.approx(sum((2e9 + n * 1e9) / 5e9 + ar + 0.01 for n in busiest))
        assert t >= sum((2e9 + len(b) / 2 * 1e9) / 5e9 + ar + 0.01 for b in batches)  # never below an even split


def test_last_stage_runs_a_per_token_head_on_the_kept_position_only():
    from edgeft.runtime.strategies.hybrid import LogitsModel

    seen = []
    head = torch.nn.Linear(4, 7)

    def spy(h):
        seen.append(tuple(h.shape))
        return head(h)

    hidden = torch.randn(2, 5, 4)
    out = LogitsModel(spy, hidden, per_token=True)(logits_to_keep=1).logits
    assert seen == [(2, 1, 4)] and torch.allclose(out[:, -1], head(hidden)[:, -1])
    assert LogitsModel(spy, hidden[:, 0], per_token=False)(logits_to_keep=1).logits.shape == (2, 7)


def test_last_stage_verbalizer_reads_the_label_words_logits_only(tiny_llama):
    """The runtime's last-stage callables pass the objective's label words to BlockView.final, which projects onto
    those rows of the LM head only: the same logits as the whole vocabulary's, at the label columns."""
    from edgeft.models import load_backbone
    from edgeft.runtime.strategies.common import HiddenModel
    from edgeft.runtime.strategies.hybrid import LogitsModel
    from edgeft.train.objective import forward

    view = load_backbone(str(tiny_llama), head="causal_lm").view
    hidden = torch.randn(3, 5, view.core.norm.weight.shape[0])
    labels, ids = [4, 9], torch.zeros(3, 5, dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "label": torch.tensor([0, 1, 1])}
    whole = view.final(hidden[:, -1:])[:, -1, labels]
    for model in (LogitsModel(view.final, hidden, per_token=True), HiddenModel(view, view.num_blocks, hidden)):
        assert model.accepts_vocab_ids
        _, logits, _ = forward(model, batch, "verbalize", labels)
        assert logits.shape == (3, 2) and torch.allclose(logits, whole, atol=1e-6)


def test_cached_epochs_use_the_step_cost_measured_at_the_owners_rows():
    """A cached step is not linear in its rows (SmolLM2 PAC: 3 rows cost more than 4): where the cost is
    measured per row count, the prediction takes the busiest owner's rows from there, not from the line."""
    import dataclasses

    from edgeft.runtime.placement import RuntimePlan, cached_epochs_s
    from edgeft.runtime.placement import owner_of

    cl = _cluster()  # two devices at 5 GFLOP/s
    by_rows = (3e9, 6e9, 9e9, 6e9)  # 1..4 rows
    table = dataclasses.replace(make_table(PRESETS["minilm-l6"], "pac", 4, 24, {}), cached_step_flops=1e9,
                                cached_call_flops=2e9, step_fixed_s=0.01, trainable_total=1000,
                                cached_rows_flops=by_rows)
    assert [table.cached_flops(n) for n in range(6)] == [0.0, 3e9, 6e9, 9e9, 6e9, 7e9]  # beyond: + per row
    plan = RuntimePlan("hybrid", [{"name": d.name} for d in cl.devices], {"cached_shares": {"0": 0.5, "1": 0.5}}, {})
    ids = [f"s{i}" for i in range(16)]
    epochs = [[list(range(0, 4)), list(range(4, 8)), list(range(8, 12)), list(range(12, 16))]]
    got = cached_epochs_s(plan, cl, table, ids, epochs)[0]
    ar = 2 * (1000 * 2 / 2 * 8 / 40e6)  # grad_sync bf16: 2 bytes a gradient
    busiest = [max(sum(owner_of(ids[i], {0: 0.5, 1: 0.5}) == r for i in b) for r in (0, 1)) for b in epochs[0]]
    assert got == pytest.approx(sum(by_rows[n - 1] / 5e9 + ar + 0.01 for n in busiest))
    line = sum((2e9 + n * 1e9) / 5e9 + ar + 0.01 for n in busiest)
    assert got != pytest.approx(line)


class _Stack(torch.nn.Module):
    """Embedding, three blocks (the middle one ~20x the work of the others) and a head."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 32)
        heavy = torch.nn.Sequential(torch.nn.Linear(32, 384), *[torch.nn.Linear(384, 384) for _ in range(3)],
                                    torch.nn.Linear(384, 32))
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(32, 32), heavy, torch.nn.Linear(32, 32)])
        self.head = torch.nn.Linear(32, 2)

    def forward(self, ids):
        h = self.embed(ids)
        for b in self.blocks:
            h = torch.tanh(b(h))
        return self.head(h)


def test_part_clock_times_each_block_forward_and_backward():
    torch.manual_seed(0)
    model = _Stack()
    model.embed.weight.requires_grad_(False)  # block 0's input needs no gradient: its backward ends the step
    clock = cal.PartClock(model.embed, list(model.blocks))
    ids = torch.randint(0, 50, (64, 32))
    import time

    c0 = time.process_time()
    for _ in range(5):
        model(ids).logsumexp(-1).mean().backward()
        clock.step_done()
    clock.total = time.process_time() - c0
    clock.remove()
    f = clock.fractions()
    assert all(x > 0 for x in f["fwd"]) and all(x > 0 for x in f["bwd"]) and f["embed"] > 0
    assert f["embed"] + sum(f["fwd"]) + sum(f["bwd"]) + f["rest"] == pytest.approx(1.0)
    assert f["fwd"][1] > 3 * max(f["fwd"][0], f["fwd"][2])  # the heavy block is found heavy, both ways
    assert f["bwd"][1] > 3 * max(f["bwd"][0], f["bwd"][2])
    model(ids).sum().backward()  # removed: the hooks no longer count
    assert clock.fractions() == f


def test_measured_parts_share_out_the_step_and_keep_its_total():
    from edgeft.runtime.placement import with_measured_parts

    table = make_table(PRESETS["minilm-l6"], "lora", 8, 24, {})
    total = table.embed_fwd + table.fwd.sum() + table.bwd_train.sum() + table.head_fwd + table.head_bwd
    parts = {"embed": 0.04, "fwd": [0.1] * 6, "bwd": [0.05] * 5 + [0.01], "rest": 0.06}
    t = with_measured_parts(table, parts)
    assert t.embed_fwd == pytest.approx(0.04 * total)
    assert t.fwd == pytest.approx([0.1 * total] * 6)
    assert t.bwd_train[-1] == pytest.approx(0.01 * total)
    assert t.head_fwd + t.head_bwd == pytest.approx(0.06 * total)
    assert t.bwd_pass / t.bwd_train == pytest.approx(table.bwd_pass / table.bwd_train)
    with pytest.raises(Exception, match="6"):
        with_measured_parts(table, {**parts, "fwd": [0.1] * 5})


def test_deft_round_waits_for_the_slowest_compute_then_the_slowest_link():
    from edgeft.planner.deft_problem import build_deft_instance
    from edgeft.planner.dual_ascent import dual_ascent
    from edgeft.runtime.placement import deft_round_s, plan_deft

    table = make_table(PRESETS["minilm-l6"], "lora", 8, 24, {})
    cl = parse_cluster({"name": "t", "devices": [
        {"name": f"d{i}", "compute": {"flops": f}, "memory_gb": 8, "link": {"rate_mbps": m, "latency_ms": 2.0}}
        for i, (f, m) in enumerate([(30e9, 90), (25e9, 30), (40e9, 15)])],
        "servers": [{"name": "edge", "compute": {"flops": 1e13}, "memory_gb": 80, "band_mhz": 20}]})
    inst = build_deft_instance(cl, table, 3)
    sol = dual_ascent(inst)
    cols = range(len(sol.assign))
    rate = [sol.share[k] * inst.rate[k] for k in sol.assign]
    want = (max(inst.compute_s[k, j] for j, k in zip(cols, sol.assign))
            + max(inst.upload_bits[j] / r for j, r in zip(cols, rate))
            + max(inst.download_bits / r for r in rate) + 2 * 2 * 2 * 0.002)
    got = deft_round_s(inst, sol.assign, sol.share, cl)
    assert got == pytest.approx(want)
    assert got >= sol.makespan  # the barrier never beats every device finishing on its own clock
    assert plan_deft(cl, table, steps=5).predicted["epoch_s"] == pytest.approx(5 * got)


def test_a_reused_plan_rescales_its_times_to_this_runs_steps_and_names_what_else_differs(tmp_path, tiny_llama):
    """`launch --plan` printed the plan's predicted times, made for the run that wrote it, whatever this run's
    train rows or batch size: now another step count rescales the epoch times (a step's price x steps), another
    step price (batch size, sequence length, host, time scale) is named in a warning, and the same settings give
    the same times without one. A plan file from before plans recorded their settings is said to be one."""
    import json

    from edgeft.errors import ConfigError
    from edgeft.runtime.run import LaunchConfig, launch

    class Planned(Exception):
        """Stops a launch once its plan is printed, before any worker starts (launch's on_start)."""

    def stop(total):
        raise Planned

    def cfg(name, rows=16, batch=8, plan=None):
        return LaunchConfig(cluster="examples/clusters/four-phones.yaml", model=str(tiny_llama), method="lora",
                            task={"name": "sst2", "train_samples": rows, "max_length": 16}, plan=plan,
                            out=str(tmp_path / name), train={"epochs": 1, "batch_size": batch},
                            emulate_compute=False, evaluate=False)

    launch(cfg("made"))  # the run that writes the plan
    made = json.loads((tmp_path / "made" / "plan.attempt0.json").read_text())
    assert made["priced_for"]["train_rows"] == 16 and made["priced_for"]["steps_per_epoch"] == 2
    old = tmp_path / "old-plan.json"
    old.write_text(json.dumps({k: v for k, v in made.items() if k != "priced_for"}))
    plan = str(tmp_path / "made" / "plan.attempt0.json")
    reused = {}
    for name, run in (("same", cfg("same", plan=plan)), ("rows", cfg("rows", rows=32, plan=plan)),
                      ("batch", cfg("batch", batch=4, plan=plan)), ("old", cfg("old", plan=str(old)))):
        said = []
        with pytest.raises(Planned):
            launch(run, say=said.append, on_start=stop)
        event = next(json.loads(line) for line in (tmp_path / name / "events.jsonl").read_text().splitlines()
                     if json.loads(line)["event"] == "plan_reused")
        reused[name] = (event, [line for line in said if "--plan" in line])
    event, lines = reused["same"]
    assert event["predicted"] == made["predicted"] and not event["notes"] and event["warning"] is None and not lines
    event, lines = reused["rows"]  # 4 steps of the same width, not 2
    assert event["predicted"]["epoch_s"] == pytest.approx(2 * made["predicted"]["epoch_s"])
    assert event["now"]["mean_padded_seq_len"] == made["priced_for"]["mean_padded_seq_len"]
    assert lines == [f"--plan {plan}: predicted epoch times rescaled from its 2 to this run's 4 steps per epoch"]
    event, lines = reused["batch"]  # 4 steps of another price: rescaled, and said to be the plan's
    assert event["predicted"]["epoch_s"] == pytest.approx(2 * made["predicted"]["epoch_s"])
    assert lines[1].startswith(f"warning: --plan {plan}: its predicted times were made for the run that "
                               "wrote it, which differs from this one (batch size 8 then, 4 now")
    event, lines = reused["old"]
    assert event["predicted"] == made["predicted"] and "does not record the settings" in lines[0]
    other = cfg("other", plan=plan).model_copy(update={"method": "bitfit"})  # another method's placement and prices
    with pytest.raises(ConfigError, match=r"the plan was made for method 'lora', this run trains 'bitfit'"):
        launch(other, on_start=stop)
    assert not (tmp_path / "other").exists()
