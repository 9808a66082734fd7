"""A slow or loaded host must not make `edgeft launch` lose healthy devices: one rank's long work between steps
(here a checkpoint shard written slowly, as on a busy disk) is waited for without the step-sized group timeout.

The slow rank is made slow deterministically: a sitecustomize (on PYTHONPATH, so every worker process loads it)
wraps the function in question with a sleep on one rank only."""

from pathlib import Path

import helpers
from edgeft.runtime.launcher import Supervisor

SLOW_HOOK = '''
import os
if os.environ.get("EDGEFT_TEST_SLOW") and os.environ.get("RANK") == os.environ.get("EDGEFT_TEST_SLOW_RANK"):
    import importlib, time
    mod_name, fn_name = os.environ["EDGEFT_TEST_SLOW"].rsplit(":", 1)
    mod = importlib.import_module(mod_name)
    fn = getattr(mod, fn_name)
    delay = float(os.environ["EDGEFT_TEST_SLOW_S"])

    def slow(*args, **kwargs):
        time.sleep(delay)
        return fn(*args, **kwargs)

    setattr(mod, fn_name, slow)
'''


def _slow(monkeypatch, tmp_path: Path, target: str, rank: int, seconds: float) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_HOOK)
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    monkeypatch.setenv("EDGEFT_TEST_SLOW", target)
    monkeypatch.setenv("EDGEFT_TEST_SLOW_RANK", str(rank))
    monkeypatch.setenv("EDGEFT_TEST_SLOW_S", str(seconds))


def _supervise(spec, tmp_path):
    path = tmp_path / "spec.json"
    spec.save(path)
    sup = Supervisor(spec, path, startup_grace_s=120, stale_after_s=60)
    try:
        sup.start()
        return sup.watch()
    finally:
        sup.kill_all()


def test_a_slow_checkpoint_write_on_one_rank_does_not_drop_the_ranks_waiting_for_it(sst2_llama, tmp_path,
                                                                                      monkeypatch):
    """Rank 0 writes the hybrid run's only shard ('all') while the others wait in the checkpoint's barrier. That
    barrier kept the group's step-sized timeout: a shard written more slowly than one timeout (a loaded host's busy
    disk) made the waiting rank exit as a bystander ('Timed out ... for recv'), and the launcher dropped a healthy
    device and re-planned. The barrier now waits as the waits for an evaluation do; a lost rank is still found by
    its exit or its stale heartbeat."""
    _slow(monkeypatch, tmp_path, "edgeft.runtime.checkpoint:save_shard", rank=0, seconds=20.0)
    s = helpers.spec(tmp_path / "run", sst2_llama, "hybrid", {"stages": [{"blocks": [0, 4], "ranks": [0, 1],
                                                                          "shares": [0.5, 0.5]}], "micro_batches": 1},
                     ["d0", "d1"], train={"batch_size": 16, "checkpoint_every": 100}, timeout_s=8)
    out = _supervise(s, tmp_path)
    assert out.status == "ok", (out.status, out.lost, out.codes)


def test_when_the_ranks_give_up_waiting_for_one_that_still_runs_that_one_is_named_not_a_bystander(sst2_llama,
                                                                                                   tmp_path,
                                                                                                   monkeypatch):
    """d0 computes one step for longer than the group timeout (a hang that leaves its heartbeat thread beating, or
    a host loaded far past the plan); d1 times out in the step's all-reduce and exits as a bystander (code 3). The
    launcher blamed d1 ('exited with code 3': the lowest bystander), so a re-plan dropped the device that had done
    nothing wrong and kept the one everyone waited for. The rank still running while every other says a peer was
    lost is the one named."""
    _slow(monkeypatch, tmp_path, "edgeft.runtime.strategies.hybrid:_block_stage", rank=0, seconds=30.0)
    s = helpers.spec(tmp_path / "run", sst2_llama, "hybrid", {"stages": [{"blocks": [0, 4], "ranks": [0, 1],
                                                                          "shares": [0.5, 0.5]}], "micro_batches": 1},
                     ["d0", "d1"], train={"batch_size": 16}, timeout_s=8)
    out = _supervise(s, tmp_path)
    assert out.status == "lost" and list(out.lost) == [0], (out.status, out.lost, out.codes)
    assert "its peers gave up waiting for it" in out.lost[0] and out.codes[1] == 3
