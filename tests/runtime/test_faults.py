"""A device dies mid-epoch: the run notices, re-plans on the rest, resumes, and finishes with a metric.
A stalled device (no heartbeat) is detected within the bound and named."""

import json
import math
import time
from pathlib import Path

import helpers
from edgeft.runtime.faults import read_beats
from edgeft.runtime.launcher import Supervisor
from edgeft.runtime.run import LaunchConfig, launch

CLUSTER = Path(__file__).parent / "clusters" / "three.yaml"


def test_killed_device_replan_and_resume(sst2_llama, tmp_path):
    cfg = LaunchConfig(cluster=str(CLUSTER), model=str(sst2_llama), method="pac", strategy="hybrid",
                       task={**helpers.TASK, "train_samples": 40}, method_options={"dropout": 0.0, "width": 8},
                       train={"epochs": 2, "batch_size": 4, "micro_batches": 2, "checkpoint_every": 2, "lr": 5e-3},
                       out=str(tmp_path / "run"), link_mode="none", emulate_compute=False, timeout_s=20,
                       heartbeat_s=0.5, kill_device_at_step=["dev-b", 5])
    m = launch(cfg, say=lambda *_: None)
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    lost = [e for e in events if e["event"] == "device_lost"]
    assert [e["device"] for e in lost] == ["dev-b"] and "SIGKILL" in lost[0]["reason"]
    replan = [e for e in events if e["event"] == "replan"]
    assert replan and replan[0]["devices"] == ["dev-a", "dev-c"]
    assert [a["status"] for a in m["attempts"]] == ["lost", "ok"]
    assert m["devices"] == ["dev-a", "dev-c"]
    # resumed from a checkpoint at or after step 4, not from scratch; all 20 steps were trained
    resumed = [json.loads(x) for f in (tmp_path / "run" / "ranks").glob("*.events.jsonl")
               for x in f.read_text().splitlines() if '"resumed"' in x]
    assert resumed and all(r["global_step"] >= 4 for r in resumed)
    steps = [s for s, _ in m["losses"]]
    assert steps[-1] == 20 and all(math.isfinite(v) for _, v in m["losses"])
    # no epoch ended before the loss: the re-planned attempt ran the rest of epoch 1, then epoch 2
    assert [(e["epoch"], e["attempt"], e["partial"]) for e in m["epochs"]] == [(1, 1, True), (2, 1, False)]
    acc = m["dev_metric"]["accuracy"]
    assert 0.0 <= acc <= 1.0


def test_stalled_device_is_detected_by_heartbeat(sst2_llama, tmp_path):
    s = helpers.spec(tmp_path, sst2_llama, "deft", {"server": 0, "devices": [1], "blocks": {"1": [0, 4]}},
                     ["edge", "d0"], servers=("edge",), train={"batch_size": 2, "checkpoint_every": 50},
                     timeout_s=60)
    path = tmp_path / "spec.json"
    s.save(path)
    sup = Supervisor(s, path, startup_grace_s=120, stale_after_s=3.0)
    sup.inject = (1, 2, "stall")  # the device's worker SIGSTOPs itself at step 2: alive, silent
    try:
        sup.start()
        out = sup.watch()
        detected = time.time()
    finally:
        sup.kill_all()
    assert out.status == "lost" and list(out.lost) == [1]
    assert "no heartbeat" in out.lost[1]
    last_beat = read_beats(tmp_path / "heartbeats")[1]
    assert last_beat["step"] <= 2  # it never got past the step it stopped at
    assert detected - last_beat["time"] < 3.0 + 25.0  # detected within the bound (+ the peers' grace)


def test_a_workers_own_edgeft_error_comes_back_as_that_error_not_a_traceback(sst2_llama, tmp_path):
    """A worker that meets bad input (here: a method its strategy cannot run, which the launch refuses earlier but
    a spec started by hand with torchrun is not) leaves the error for the launcher, which raises it as the CLI says
    it: the kind, the rank, the message. A later attempt does not read an earlier attempt's error."""
    from edgeft.errors import ConfigError
    from edgeft.runtime.faults import read_user_error

    s = helpers.spec(tmp_path, sst2_llama, "deft", {"server": 0, "devices": [1], "blocks": {"1": [0, 4]}},
                     ["edge", "d0"], method="prompt", servers=("edge",), timeout_s=60)
    path = tmp_path / "spec.json"
    s.save(path)
    sup = Supervisor(s, path, startup_grace_s=120, stale_after_s=60)
    try:
        sup.start()
        out = sup.watch()
    finally:
        sup.kill_all()
    assert out.status == "error" and out.culprit in ("edge", "d0")
    err = read_user_error(tmp_path, out.culprit, s.attempt)
    assert isinstance(err, ConfigError)
    assert str(err).startswith(f"{out.culprit}: method 'prompt' cannot run block by block")
    assert read_user_error(tmp_path, out.culprit, s.attempt + 1) is None
