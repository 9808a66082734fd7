"""A resumed attempt (after a lost device, or `edgeft launch --resume` after a stop) reports the dev metrics of
the epochs trained before it, and takes the untrained model's from its checkpoint instead of evaluating again."""

import json
from pathlib import Path

import pytest

import helpers
from edgeft.errors import CacheError, ConfigError, EdgeftError
from edgeft.runtime import checkpoint as ckpt
from edgeft.runtime.run import LaunchConfig, launch

CLUSTER = Path(__file__).parent / "clusters" / "three.yaml"


def _keys(model, strategy: str, out: Path) -> dict:
    return dict(cluster=str(CLUSTER), model=str(model), method="lora", strategy=strategy,
                task={**helpers.TASK, "train_samples": 16}, out=str(out), link_mode="none", emulate_compute=False,
                evaluate=True, dev_samples_eval=8, heartbeat_s=0.5, timeout_s=20,
                train={"epochs": 3, "batch_size": 4, "checkpoint_every": 2, "lr": 5e-3})


def _evaluations(out: Path) -> list[dict]:
    return [e for f in sorted((out / "ranks").glob("*.events.jsonl")) for e in map(json.loads, f.open())
            if e["event"] == "evaluated"]


def test_a_device_lost_in_epoch_3_keeps_the_dev_metrics_of_epochs_0_to_2(sst2_llama, tmp_path):
    out = tmp_path / "run"  # 4 steps an epoch: dev-b dies in epoch 3; attempt 1 re-plans on the rest and resumes
    m = launch(LaunchConfig(**_keys(sst2_llama, "hybrid", out), kill_device_at_step=["dev-b", 9], max_attempts=2),
               say=lambda *_: None)
    assert [a["status"] for a in m["attempts"]] == ["lost", "ok"]
    assert [e["epoch"] for e in m["evals"]] == [0, 1, 2, 3]
    assert m["dev_metric_before"]["epoch"] == 0
    second = [e for e in _evaluations(out) if e["attempt"] == 1]
    assert [e.get("reused") for e in second] == ["checkpoint", None]  # epoch 0 reused, epoch 3 measured


def test_launch_resume_after_a_stop_reports_every_epoch_once(sst2_llama, tmp_path):
    out = tmp_path / "run"
    keys = _keys(sst2_llama, "split", out)
    with pytest.raises(EdgeftError, match="gave up after 1 attempts"):
        launch(LaunchConfig(**keys, kill_device_at_step=["dev-b", 9], max_attempts=1), say=lambda *_: None)
    events = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert "replan" not in events  # no attempt was left: no 're-planning on ...' before giving up
    failed = json.loads((out / "metrics.json").read_text())  # before: no metrics.json, no word that it had ended
    assert failed["status"] == "failed" and "gave up after 1 attempts" in failed["error"]
    assert failed["last_checkpoint"]["global_step"] == 8 and events[-1] == "failed"
    from edgeft.cli.finetune import check_not_stopped  # eval --adapter of it: where to go on, not 'no adapter'

    with pytest.raises(ConfigError, match=r"the launch in .*run stopped \(failed\) .*checkpoint is step 8: run the "
                                          r"same `edgeft launch` with --resume"):
        check_not_stopped(out / "adapter")
    before = json.loads((ckpt.latest(out / "checkpoint")[0] / ckpt.EVALS).read_text())
    m = launch(LaunchConfig(**keys, resume=True), say=lambda *_: None)
    assert [e["epoch"] for e in m["evals"]] == [0, 1, 2, 3]
    assert m["evals"][:3] == before  # the metrics measured before the stop, unchanged


@pytest.mark.parametrize("text", ["{not json", '{"epoch": 0}', '[{"accuracy": 0.5}]'])
def test_a_damaged_evals_file_names_itself_and_the_remedy(tmp_path, text):
    ckpt.save_evals(tmp_path, 4, [{"epoch": 0, "accuracy": 0.5}])
    f = ckpt.step_dir(tmp_path, 4) / ckpt.EVALS
    assert ckpt.read_evals(f.parent) == [{"epoch": 0, "accuracy": 0.5}]
    f.write_text(text)
    with pytest.raises(CacheError, match=rf"{f}: .*delete it to resume without the earlier dev metrics"):
        ckpt.read_evals(f.parent)
