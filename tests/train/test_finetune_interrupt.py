"""A stop signal during `edgeft finetune`: stop after the step under way, checkpoint it, and resume from there."""

import json
import os
import signal

import pytest
import torch

from edgeft.processes import Interrupted
from edgeft.train.recipe import config_from_dict, run_finetune


def _cfg(model, out, method="lora", **top):
    return config_from_dict({
        "model": str(model), "method": method, "out": str(out),
        "task": {"name": "sst2", "train_samples": 24, "dev_samples": 8, "max_length": 24},
        "train": {"epochs": 2, "batch_size": 8, "lr": 5e-3}, **top,
    })


def _trainables(run_dir):
    return torch.load(run_dir / "checkpoint" / "state.pt", weights_only=True)["trainables"]


def _signal_at(step: int, times: int = 1):
    """A progress factory whose callback sends this process SIGINT `times` times as step `step` ends."""
    def factory(total):
        seen = []

        def tick(*_, **__):
            seen.append(1)
            if len(seen) == step:
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)
        return tick
    return factory


@pytest.mark.parametrize("method,step", [("lora", 2), ("pac", 2), ("pac", 4), ("mezo", 4), ("fwdgrad", 4), ("full", 2), ("bitfit", 2), ("prompt", 2)])
def test_a_stop_mid_epoch_checkpoints_that_step_and_resume_lands_on_the_uninterrupted_weights(tmp_path, tiny_llama,
                                                                                              method, step):
    """Ctrl-C ended `finetune` with nothing saved since the last epoch's end and no word of where it stopped. PAC
    resumed (even from an epoch's end) without its channel statistics, which no checkpoint held and only the first
    epoch measures, and with an empty cache whose misses gave the backbone's taps unrounded: other weights."""
    run_finetune(_cfg(tiny_llama, tmp_path / "straight", method))
    said = []
    with pytest.raises(Interrupted):
        run_finetune(_cfg(tiny_llama, tmp_path / "stopped", method), progress_factory=_signal_at(step), say=said.append)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    assert any("stopping after this step" in line for line in said)
    stopped = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert (stopped["status"], stopped["global_step"], stopped["checkpoint_step"], len(stopped["losses"])) == \
        ("interrupted", step, step, step)
    events = [json.loads(line) for line in (tmp_path / "stopped" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "interrupted" and events[-1]["signal"] == "SIGINT"
    bar = {}

    def counting(total):  # the resumed run's bar starts where the checkpoint is and ends full
        bar.update(total=total, done=0)
        return lambda loss=None, note="", steps=1: bar.update(done=bar["done"] + steps)

    resumed = run_finetune(_cfg(tiny_llama, tmp_path / "stopped", method, resume=True), progress_factory=counting)
    assert bar["done"] == bar["total"] == 6
    assert resumed["resumed_from"] == {"epoch": step // 3, "batch_in_epoch": step % 3, "global_step": step}
    a, b = _trainables(tmp_path / "straight"), _trainables(tmp_path / "stopped")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_a_second_stop_signal_stops_at_once_and_keeps_no_unfinished_step(tmp_path, tiny_llama):
    with pytest.raises(Interrupted):
        run_finetune(_cfg(tiny_llama, tmp_path / "run"), progress_factory=_signal_at(1, times=2), say=lambda m: None)
    stopped = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stopped["checkpoint"] is None and stopped["global_step"] == 1  # no checkpoint yet: the epoch had not ended
    assert not (tmp_path / "run" / "checkpoint" / "state.pt").exists()


def test_the_cli_says_where_a_stopped_run_stands(tmp_path):
    from edgeft.cli.finetune import stopped_where

    assert stopped_where(tmp_path) == f"before training began; {tmp_path} is as it was"
    (tmp_path / "metrics.json").write_text(json.dumps({"dev_metric": 0.8}))  # an earlier, finished run's
    assert stopped_where(tmp_path).startswith("before training began")
    stopped = {"status": "interrupted", "global_step": 64, "total_steps": 189, "checkpoint": "c/state.pt",
               "checkpoint_step": 63}
    (tmp_path / "metrics.json").write_text(json.dumps(stopped))
    assert stopped_where(tmp_path) == (f"at step 64 of 189; {tmp_path} keeps the checkpoint (step 63), events.jsonl "
                                       "and metrics.json: run the same command with --resume to go on from there")
    (tmp_path / "metrics.json").write_text(json.dumps({**stopped, "checkpoint": None}))
    assert "nothing in" in stopped_where(tmp_path)


def test_a_zeroth_order_method_over_pac_prepares_pac_as_pac_does(tmp_path, tiny_llama):
    """MeZO over PAC's side network never filled PAC's cache before the first epoch nor measured its channel
    statistics (tap_rows stayed 0: the taps were never standardised): the zeroth-order methods did not pass the
    base method's epoch start (or placement) on."""
    from safetensors.torch import load_file

    metrics = run_finetune(_cfg(tiny_llama, tmp_path / "run", "mezo", method_options={"base": "pac"}))  # lr: --lr
    assert int(load_file(str(tmp_path / "run" / "adapter" / "pac.safetensors"))["side.tap_rows"]) > 0
    cache = metrics["activation_cache"]
    assert cache["writes"] == 24 + 8 and cache["misses"] == 8  # training rows filled before epoch 1; dev rows miss


def test_a_resumed_run_reports_the_dev_metrics_measured_before_the_stop(tmp_path, tiny_llama):
    """metrics.json of a resumed finetune had dev_metric_before None and only the epochs after the stop."""
    straight = run_finetune(_cfg(tiny_llama, tmp_path / "straight"))
    with pytest.raises(Interrupted):  # 3 steps an epoch: stopped in epoch 2, after epoch 1's evaluation
        run_finetune(_cfg(tiny_llama, tmp_path / "stopped"), progress_factory=_signal_at(4), say=lambda m: None)
    resumed = run_finetune(_cfg(tiny_llama, tmp_path / "stopped", resume=True))
    assert straight["dev_metric_before"] is not None
    assert resumed["dev_metric_before"] == straight["dev_metric_before"]
    assert [e["epoch"] for e in resumed["eval_history"]] == [1, 2]
    assert resumed["eval_history"][0] == straight["eval_history"][0]
