"""`edgeft launch` stopped by SIGTERM or SIGINT: no worker survives it, no network namespace is left
behind, and the run directory says it was interrupted (issue 16)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeft.processes import alive as _alive
from edgeft.runtime.faults import read_beats
from edgeft.runtime.netns import tc_available

CLUSTER = Path(__file__).parent / "clusters" / "three.yaml"


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _launch_until_every_worker_steps(model: Path, tmp_path: Path, link_mode: str):
    """`edgeft launch` of a long hybrid LoRA run; returns (its process, run dir, log file, the workers' pids) once
    every worker has made a step."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgeft.cli", "launch", "--cluster", str(CLUSTER), "--model", str(model),
           "--task", "sst2", "--train-samples", "40", "--dev-samples", "8", "--max-length", "24", "--method", "lora",
           "--strategy", "hybrid", "--epochs", "200", "--batch-size", "4", "--micro-batches", "2",
           "--no-compute-emulation", "--link-mode", link_mode, "--out", str(out)]
    log = open(tmp_path / "launch.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        beats = read_beats(out / "heartbeats") if (out / "heartbeats").is_dir() else {}
        started = [e for e in _events(out) if e["event"] == "attempt_start"]
        if started and len(beats) == len(started[0]["ranks"]) and all(b.get("step", 0) >= 1 for b in beats.values()):
            return proc, out, log, [b["pid"] for b in beats.values()]
        time.sleep(0.5)
    return proc, out, log, []


def _leave_nothing(proc, out: Path, log, pids: list[int]) -> None:
    """Never leave a launcher, worker or namespace to the next test, whatever the test found."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    beats = read_beats(out / "heartbeats") if (out / "heartbeats").is_dir() else {}
    for p in set(pids) | {b["pid"] for b in beats.values()}:
        if _alive(p):
            os.killpg(p, signal.SIGKILL)
    for n in (n for e in _events(out) if e["event"] == "namespaces" for n in e["names"]):
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
    log.close()


@pytest.mark.parametrize("sig,link_mode", [(signal.SIGTERM, "tc"), (signal.SIGINT, "none")])
def test_a_stop_signal_kills_the_workers_and_records_the_interruption(sst2_llama, tmp_path, sig, link_mode):
    if link_mode == "tc" and not tc_available()[0]:
        link_mode = "none"  # the namespace half needs root + ip + tc; the worker half runs anyway
    proc, out, log, pids = _launch_until_every_worker_steps(sst2_llama, tmp_path, link_mode)
    try:
        assert pids, f"workers never got going:\n{(tmp_path / 'launch.log').read_text()[-3000:]}"
        assert all(_alive(p) for p in pids)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        gone_by = time.time() + 5
        while time.time() < gone_by and any(_alive(p) for p in pids):
            time.sleep(0.1)
        assert [p for p in pids if _alive(p)] == [], "workers outlived the launcher"
        assert rc == 128 + sig, (rc, (tmp_path / "launch.log").read_text()[-3000:])
        events = _events(out)
        stop = [e for e in events if e["event"] == "interrupted"]
        assert len(stop) == 1 and stop[0]["signal"] == signal.Signals(sig).name
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["status"] == "interrupted" and min(metrics["steps_reached"].values()) >= 1
        made = [n for e in events if e["event"] == "namespaces" for n in e["names"]]
        if link_mode == "tc":
            assert made and not set(made) & _namespaces()
        assert "Traceback" not in (tmp_path / "launch.log").read_text()
    finally:
        _leave_nothing(proc, out, log, pids)


def test_workers_stop_when_their_launcher_is_killed_outright(sst2_llama, tmp_path):
    """SIGKILL (or the out-of-memory killer) gives the launcher no chance to stop its workers, which run in
    sessions of their own: they trained on to the end with no one to read their result. Each now sees its parent
    go at its next heartbeat (1 s) and exits, saying why in its rank's events (or ends as its peers go)."""
    proc, out, log, pids = _launch_until_every_worker_steps(sst2_llama, tmp_path, "none")
    try:
        assert pids, f"workers never got going:\n{(tmp_path / 'launch.log').read_text()[-3000:]}"
        proc.kill()
        proc.wait()
        gone_by = time.time() + 30
        while time.time() < gone_by and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert [p for p in pids if _alive(p)] == [], "workers outlived a killed launcher"
        said = [json.loads(x) for f in (out / "ranks").glob("*.events.jsonl") for x in f.read_text().splitlines()]
        lost = [e for e in said if e["event"] == "launcher_lost"]  # a peer may end first on the closed socket
        assert lost and all(e["launcher_pid"] == proc.pid for e in lost), said[-5:]
    finally:
        _leave_nothing(proc, out, log, pids)


def _events(out: Path) -> list[dict]:
    f = out / "events.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def test_launch_resume_without_a_checkpoint_says_so_and_runs_from_scratch(sst2_llama, tmp_path):
    import helpers
    from edgeft.runtime.run import LaunchConfig, launch

    said = []
    cfg = LaunchConfig(cluster=str(CLUSTER), model=str(sst2_llama), method="lora", strategy="hybrid",
                       task={**helpers.TASK, "train_samples": 16}, train={"epochs": 1, "batch_size": 4, "lr": 5e-3},
                       out=str(tmp_path / "run"), link_mode="none", emulate_compute=False, evaluate=False,
                       resume=True)
    m = launch(cfg, say=said.append)
    warned = [s for s in said if "no complete checkpoint" in s]
    assert len(warned) == 1 and str(tmp_path / "run") in warned[0] and "from scratch" in warned[0]
    assert [s for s in said if "--max-length 24 shortened" in s]  # a long SST-2 row: as finetune, launch says so
    assert [e["event"] for e in _events(tmp_path / "run")].count("resume_missing") == 1
    assert [s for s, _ in m["losses"]][-1] == 4  # all 4 steps trained


def test_the_epoch_table_after_resume_keeps_the_epochs_run_before_the_stop(sst2_llama, tmp_path):
    """A launch that stops in epoch 2 (a device lost with no attempt left to re-plan: the run directory then holds
    what an interrupted one holds) and is continued with --resume reports both epochs, each with the attempt that
    ran it; the resumed launch numbers its attempts after the stopped one's."""
    import helpers
    from edgeft.errors import EdgeftError
    from edgeft.runtime.run import LaunchConfig, launch

    keys = dict(cluster=str(CLUSTER), model=str(sst2_llama), method="lora", strategy="hybrid",
                task={**helpers.TASK, "train_samples": 16}, out=str(tmp_path / "run"), link_mode="none",
                emulate_compute=False, evaluate=False, heartbeat_s=0.5, timeout_s=20,
                train={"epochs": 2, "batch_size": 4, "checkpoint_every": 2, "lr": 5e-3})
    with pytest.raises(EdgeftError, match="gave up after 1 attempts"):
        launch(LaunchConfig(**keys, kill_device_at_step=["dev-b", 5], max_attempts=1), say=lambda *_: None)
    m = launch(LaunchConfig(**keys, resume=True), say=lambda *_: None)
    assert [(e["epoch"], e["attempt"], e["partial"]) for e in m["epochs"]] == [(1, 0, False), (2, 1, False)]
    assert all(e["measured_s"] > 0 and e["predicted_s"] for e in m["epochs"])
    assert [e["attempt"] for e in _events(tmp_path / "run") if e["event"] == "attempt_start"] == [0, 1]
    assert [(a["attempt"], a["status"]) for a in m["attempts"]] == [(0, "lost"), (1, "ok")]  # the stopped one too
    assert all(a["seconds"] > 0 for a in m["attempts"])
    assert [s for s, _ in m["losses"]][-1] == 8  # 4 steps an epoch, none trained twice


def test_a_later_launch_removes_the_namespaces_of_a_killed_launcher_and_no_others():
    """A launcher killed outright cannot run its teardown, so its network namespaces stayed. The next launch with
    link emulation deletes those named for a launcher pid that is no longer an edgeft process, and no other."""
    if not tc_available()[0]:
        pytest.skip("network namespaces need root, ip and tc")
    from edgeft.runtime.netns import NetnsTopology, run_id_for_this_process, sweep_orphaned_namespaces

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "edgeft-launch-stand-in"])
    ours = NetnsTopology(run_id_for_this_process(), [])
    orphans = [f"edgeft-{dead.pid}x1a2b-r0", f"edgeft-{dead.pid}x1a2b-hub"]
    kept = [f"edgeft-{alive.pid}x1a2b-r0", f"edgeft-probe-{dead.pid}", "not-edgeft-9"]
    try:
        for name in orphans + kept:
            subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        assert sorted(sweep_orphaned_namespaces()) == sorted(orphans)
        assert not set(orphans) & _namespaces() and set(kept) <= _namespaces()
        # this launcher's own names follow the pattern the sweep reads, with its pid
        assert ours.ns(0).startswith(f"edgeft-{os.getpid()}x") and ours.hub.endswith("-hub")
    finally:
        alive.kill()
        alive.wait()
        for name in orphans + kept:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
