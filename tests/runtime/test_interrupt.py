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

from edgeft.runtime.faults import read_beats
from edgeft.runtime.netns import tc_available

CLUSTER = Path(__file__).parent / "clusters" / "three.yaml"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("sig,link_mode", [(signal.SIGTERM, "tc"), (signal.SIGINT, "none")])
def test_a_stop_signal_kills_the_workers_and_records_the_interruption(sst2_llama, tmp_path, sig, link_mode):
    if link_mode == "tc" and not tc_available()[0]:
        link_mode = "none"  # the namespace half needs root + ip + tc; the worker half runs anyway
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgeft.cli", "launch", "--cluster", str(CLUSTER), "--model", str(sst2_llama),
           "--task", "sst2", "--train-samples", "40", "--dev-samples", "8", "--max-length", "24", "--method", "lora",
           "--strategy", "hybrid", "--epochs", "200", "--batch-size", "4", "--micro-batches", "2",
           "--no-compute-emulation", "--link-mode", link_mode, "--out", str(out)]
    log = open(tmp_path / "launch.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    pids: list[int] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            beats = read_beats(out / "heartbeats") if (out / "heartbeats").is_dir() else {}
            started = [e for e in _events(out) if e["event"] == "attempt_start"]
            if started and len(beats) == len(started[0]["ranks"]) and all(b.get("step", 0) >= 1
                                                                            for b in beats.values()):
                pids = [b["pid"] for b in beats.values()]
                break
            time.sleep(0.5)
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
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        beats = read_beats(out / "heartbeats") if (out / "heartbeats").is_dir() else {}
        for p in set(pids) | {b["pid"] for b in beats.values()}:  # never leave workers to the next test
            if _alive(p):
                os.killpg(p, signal.SIGKILL)
        for n in (n for e in _events(out) if e["event"] == "namespaces" for n in e["names"]):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        log.close()


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
