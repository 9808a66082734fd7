"""Faults found by causing them: a checkpoint that cannot be written (a full disk) and a COMPLETE.json that cannot be
read are said as such, not taken for a lost device or left as a JSONDecodeError traceback."""

import os
from pathlib import Path

import pytest

import helpers
from edgeft.errors import CacheError
from edgeft.runtime import checkpoint as ckpt
from edgeft.runtime.faults import read_user_error
from edgeft.runtime.launcher import Supervisor
from edgeft.runtime.run import LaunchConfig, launch

CLUSTER = Path(__file__).parent / "clusters" / "three.yaml"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device that is always full)")
def _supervise(spec, tmp_path, after_start=lambda sup: None):
    """The launcher's supervisor over `spec`'s workers until it classifies the run; no worker is left."""
    path = tmp_path / "spec.json"
    spec.save(path)
    sup = Supervisor(spec, path, startup_grace_s=120, stale_after_s=60)
    try:
        sup.start()
        after_start(sup)
        return sup.watch()
    finally:
        sup.kill_all()


def test_a_checkpoint_shard_that_does_not_fit_on_the_disk_is_an_error_not_a_lost_device(sst2_llama, tmp_path):
    """torch.save on a full disk raised '[enforce fail at inline_container.cc] unexpected pos', which the worker took
    for a lost peer (exit 3); every rank then exited 3 and the launcher blamed rank 0 as a lost device and re-planned
    without it, again and again. The shard is now written through a Python file (ENOSPC), the half-written file is
    removed, and the rank reports a CacheError naming the file, which the launch raises."""
    s = helpers.spec(tmp_path, sst2_llama, "hybrid", {"stages": [{"blocks": [0, 4], "ranks": [0, 1],
                                                                  "shares": [0.5, 0.5]}], "micro_batches": 1},
                     ["d0", "d1"], train={"batch_size": 8, "checkpoint_every": 2}, timeout_s=30)
    step = ckpt.step_dir(tmp_path / "checkpoint", 2)
    step.mkdir(parents=True)
    (step / "all.pt.tmp").symlink_to("/dev/full")  # rank 0's shard of step 2 lands on a disk with no room
    out = _supervise(s, tmp_path)
    assert out.status == "error" and out.culprit == "d0", (out.status, out.lost, out.codes)
    err = read_user_error(tmp_path, "d0", s.attempt)
    assert isinstance(err, CacheError) and "all.pt.tmp: cannot write the checkpoint shard" in str(err)
    assert "No space left on device" in str(err) and "--resume" in str(err)
    assert not (step / "all.pt.tmp").exists()  # the half-written shard gave its space back
    assert ckpt.latest(tmp_path / "checkpoint") is None  # the step was never marked complete


def test_resume_from_a_checkpoint_whose_complete_json_is_cut_short_names_it(sst2_llama, tmp_path):
    """A COMPLETE.json cut short (it was written in place, so a root killed or out of space mid-write left one) made
    `launch --resume` end in a JSONDecodeError traceback; it is now a CacheError naming the file and the remedy, given
    before any worker starts. The root writes it whole or not at all."""
    root = tmp_path / "run" / "checkpoint"
    ckpt.step_dir(root, 4).mkdir(parents=True)
    ckpt.commit(root, 4, {"epoch": 1, "step_in_epoch": 0, "global_step": 4, "losses": [[1, 0.7]]})
    assert [f.name for f in ckpt.step_dir(root, 4).iterdir()] == ["COMPLETE.json"]  # no .tmp left beside it
    done = ckpt.step_dir(root, 4) / "COMPLETE.json"
    done.write_text(done.read_text()[:30])
    cfg = LaunchConfig(cluster=str(CLUSTER), model=str(sst2_llama), method="lora", strategy="hybrid",
                       task={**helpers.TASK, "train_samples": 16}, train={"epochs": 2, "batch_size": 4},
                       out=str(tmp_path / "run"), link_mode="none", emulate_compute=False, evaluate=False,
                       resume=True)
    with pytest.raises(CacheError, match=r"step-0000004/COMPLETE.json: unreadable .*delete .*step-0000004"):
        launch(cfg, say=lambda *_: None)
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint"]  # refused before anything was written
    done.write_text("[]")
    with pytest.raises(CacheError, match="expected a mapping with the step's global_step"):
        ckpt.latest(root)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device that is always full)")
def test_a_rank_that_fails_on_a_disk_too_full_for_its_log_is_not_reported_as_an_empty_message(sst2_llama, tmp_path):
    """On a disk with no room left the worker can write neither its traceback nor its error file, and the launch
    said `run failed in attempt 0: d0: ` and nothing else; it now says how the rank ended, that its log is empty and
    how much room the run directory's disk has."""
    s = helpers.spec(tmp_path, sst2_llama, "hybrid", {"stages": [{"blocks": [0, 4], "ranks": [0, 1],
                                                                  "shares": [0.5, 0.5]}], "micro_batches": 1},
                     ["d0", "d1"], train={"batch_size": 8, "checkpoint_every": 2}, timeout_s=30)
    step = ckpt.step_dir(tmp_path / "checkpoint", 2)
    step.mkdir(parents=True)
    # d0's shard and error file find no room; its log keeps nothing (/dev/null: /dev/full would read forever)
    for f, to in ((step / "all.pt.tmp", "/dev/full"), (tmp_path / "ranks" / "d0.error.json", "/dev/full"),
                  (tmp_path / "logs" / "d0.attempt0.log", "/dev/null")):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.symlink_to(to)
    out = _supervise(s, tmp_path)
    assert out.status == "error" and out.culprit == "d0", (out.status, out.lost, out.codes)
    assert out.detail.startswith("d0: exited with code 1 and left nothing in its log"), out.detail
    assert "MiB free" in out.detail


def test_a_device_stalled_before_its_first_heartbeat_is_the_one_lost_not_the_peer_that_waited(sst2_llama, tmp_path):
    """A worker stopped while it starts (SIGSTOP, a hang in its imports) has no heartbeat yet, so it is not stale
    within the start-up grace; its peer times out in the rendezvous and exits as a bystander (code 3). The launcher
    blamed that peer ('exited with code 3'), dropped the healthy device and re-planned with the stalled one."""
    import signal

    s = helpers.spec(tmp_path, sst2_llama, "hybrid", {"stages": [{"blocks": [0, 4], "ranks": [0, 1],
                                                                  "shares": [0.5, 0.5]}], "micro_batches": 1},
                     ["d0", "d1"], timeout_s=8)
    out = _supervise(s, tmp_path, lambda sup: os.kill(sup.procs[1].pid, signal.SIGSTOP))  # d1 stops before a beat
    assert out.status == "lost" and list(out.lost) == [1], (out.lost, out.codes)
    assert "no heartbeat" in out.lost[1] and out.codes[0] == 3
