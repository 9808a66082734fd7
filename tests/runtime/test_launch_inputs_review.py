"""`edgeft launch` inputs a user gets wrong or uses unusually: flat config keys, a typo in --option, --resume of a
finished run, the printed plan of a one-epoch run."""

import json

import pytest
import yaml

from edgeft.errors import ConfigError

CLUSTER = "examples/clusters/four-phones.yaml"


def _cfg(tiny_llama, out, **kw):
    from edgeft.runtime.run import LaunchConfig

    return LaunchConfig(cluster=CLUSTER, model=str(tiny_llama), method="lora", out=str(out),
                        task={"name": "sst2", "train_samples": 16, "max_length": 16},
                        train={"epochs": 1, "batch_size": 8}, **kw)


def test_flat_train_and_task_keys_in_a_launch_config_go_into_their_sections(tmp_path):
    """`epochs: 2` at the top of a launch config was refused as 'unknown key (check its spelling and place)', though
    finetune's config takes it and --epochs is the same setting; now it lands in train:, task keys in task:."""
    from edgeft.runtime.run import LaunchConfig

    path = tmp_path / "launch.yaml"
    path.write_text("cluster: c.yaml\ntask: sst2\nepochs: 2\nbatch_size: 4\ntrain_samples: 32\nseed: 3\n"
                    "task_kind: classification\n")
    cfg = LaunchConfig.load(path)
    assert cfg.train.epochs == 2 and cfg.train.batch_size == 4 and cfg.train.seed == 3
    assert cfg.task == {"name": "sst2", "train_samples": 32, "seed": 3, "kind": "classification"}
    # the command line still wins over the file
    assert LaunchConfig.load(path, {"train.epochs": 5}).train.epochs == 5
    own = tmp_path / "own.yaml"
    own.write_text("cluster: c.yaml\ndata_file: notes.jsonl\nlr: 1.0e-3\n")
    cfg = LaunchConfig.load(own)
    assert cfg.task["data_file"] == "notes.jsonl" and cfg.task["name"] == "notes.jsonl" and cfg.train.lr == 1e-3
    both = tmp_path / "both.yaml"
    both.write_text("cluster: c.yaml\ntask: sst2\nepochs: 2\ntrain: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"both.yaml: epochs is given twice, flat \(2\) and under 'train:' \(3\)"):
        LaunchConfig.load(both)
    typo = tmp_path / "typo.yaml"
    typo.write_text("cluster: c.yaml\ntask: sst2\nepochz: 2\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: epochz: unknown key \(launch takes .* flat too"):
        LaunchConfig.load(typo)


def test_a_bad_method_option_is_refused_before_the_run_folder_is_written(tmp_path, tiny_llama):
    """`--option bogus=1` was refused only after config.yaml was written, so the corrected launch into the same
    --out was refused in turn: 'the output folder is not empty (config.yaml)'."""
    from edgeft.runtime.run import launch

    cfg = _cfg(tiny_llama, tmp_path / "run", method_options={"bogus": 1})
    with pytest.raises(ConfigError, match="bogus: unknown option"):
        launch(cfg)
    assert not (tmp_path / "run").exists()


def _finished_run(tmp_path, tiny_llama, epochs_done: int, global_step: int):
    out = tmp_path / "run"
    cfg = _cfg(tiny_llama, out)
    (out / "checkpoint" / f"step-{global_step:07d}").mkdir(parents=True)
    (out / "checkpoint" / f"step-{global_step:07d}" / "COMPLETE.json").write_text(json.dumps(
        {"epoch": epochs_done, "step_in_epoch": 0, "global_step": global_step, "world": 2, "losses": []}))
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump()))
    (out / "metrics.json").write_text(json.dumps({"dev_metric": {"epoch": 1, "accuracy": 0.9}}))
    return cfg


def test_resume_of_a_finished_run_is_refused_before_anything_is_written(tmp_path, tiny_llama):
    """--resume of a run that had trained all its epochs started every worker, trained nothing, and overwrote
    metrics.json's dev metric with the untrained model's (hybrid evaluates before loading the checkpoint):
    0.5938 after training became 0.5000."""
    from edgeft.runtime.run import launch

    cfg = _finished_run(tmp_path, tiny_llama, epochs_done=1, global_step=2)  # 16 rows / batch 8 = 2 steps
    before = {p.name: p.read_bytes() for p in cfg_out(cfg).iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"--resume: the run in .* has finished: .* after all 1 epoch\(s\) \(2 steps\)"
                                          r".*more --epochs.*--overwrite"):
        launch(cfg.model_copy(update={"resume": True}))
    assert {p.name: p.read_bytes() for p in cfg_out(cfg).iterdir() if p.is_file()} == before  # nothing rewritten


def test_resume_part_way_or_with_more_epochs_is_not_refused(tmp_path, tiny_llama):
    from pathlib import Path

    from edgeft.runtime.run import _check_resume_has_work

    cfg = _finished_run(tmp_path, tiny_llama, epochs_done=1, global_step=2)
    out = Path(cfg.out)
    more = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    _check_resume_has_work(more, out, steps=2)  # epoch 2 is left to train
    with pytest.raises(ConfigError, match="has finished"):
        _check_resume_has_work(cfg, out, steps=2)
    _check_resume_has_work(cfg, tmp_path / "elsewhere", steps=2)  # no checkpoint: starts from scratch


def cfg_out(cfg):
    from pathlib import Path

    return Path(cfg.out)


def test_the_printed_plan_of_a_one_epoch_run_names_no_later_epochs():
    """A one-epoch run printed 'predicted: epoch 1 1.6 s, later epochs 1.6 s'."""
    from types import SimpleNamespace

    from edgeft.runtime.run import LaunchConfig, describe_plan

    plan = SimpleNamespace(layout={"stages": [{"ranks": [0], "shares": [1.0], "blocks": [0, 6]}]},
                           predicted={"epoch_s": 1.6, "later_epoch_s": 1.6}, ranks=[{"name": "p1", "kind": "device"}])
    one = describe_plan(plan, LaunchConfig(cluster="c.yaml", task={"name": "sst2"}, train={"epochs": 1}), False)
    assert "predicted: epoch 1 1.6 s" in one and "later" not in one
    two = describe_plan(plan, LaunchConfig(cluster="c.yaml", task={"name": "sst2"}, train={"epochs": 2}), False)
    assert "predicted: epoch 1 1.6 s, later epochs 1.6 s" in two


@pytest.mark.parametrize("strategy, layout", [
    ("deft", {"server": 0, "devices": [1, 2], "blocks": {"1": [0, 2], "2": [2, 4]}}),
    ("split", {"server": 0, "devices": [1, 2], "cut": 2})])
def test_deft_and_split_score_the_dev_set_before_training_as_hybrid_does(sst2_llama, tmp_path, strategy, layout):
    """docs/runtime.md says the dev metric is measured before training too; only hybrid did, so a deft or split
    launch printed 'dev metrics:' once, with nothing to compare it with."""
    import helpers

    s = helpers.spec(tmp_path, sst2_llama, strategy, layout, ["edge", "d0", "d1"], servers=("edge",), evaluate=True)
    res = helpers.run_local(s)
    evals = res["edge"]["evals"]
    assert [e["epoch"] for e in evals] == [0, 1] and "accuracy" in evals[0]


def test_a_cluster_no_plan_fits_is_refused_before_the_run_folder_is_written(tmp_path, tiny_llama):
    """The plan's error came after config.yaml and events.jsonl were written, so the corrected command into the
    same --out was refused as 'not empty' and needed --overwrite."""
    from edgeft.errors import PlanError
    from edgeft.runtime.run import LaunchConfig, launch

    mute = "compute: {flops: 3.0e10}, memory_gb: 4, link: {rate_mbps: 0}"  # deft uploads a block every round
    cluster = tmp_path / "mute.yaml"
    cluster.write_text(f"name: mute\ndevices:\n  - {{name: p1, {mute}}}\n  - {{name: p2, {mute}}}\n"
                       "servers:\n  - {name: edge, compute: {flops: 1.0e13}, memory_gb: 80, band_mhz: 20}\n")
    run = tmp_path / "run"
    cfg = LaunchConfig(cluster=str(cluster), model=str(tiny_llama), method="lora", strategy="deft", out=str(run),
                       task={"name": "sst2", "train_samples": 16, "max_length": 16},
                       train={"epochs": 1, "batch_size": 8})
    with pytest.raises(PlanError, match="zero uplink rate"):
        launch(cfg)
    assert not run.exists() or not any(run.iterdir())


def test_devices_naming_the_server_says_it_is_one_and_lists_the_devices():
    """`--devices edge` said only "devices ['edge'] are not in four-phones.yaml", though edge is in it (a server)."""
    from edgeft.errors import PlanError
    from edgeft.planner import load_cluster
    from edgeft.runtime.placement import pick

    cluster = load_cluster(CLUSTER)
    with pytest.raises(PlanError, match=r"\['edge'\] are not in .*four-phones.yaml \(edge is a server: a run always "
                                        r"has its server; .*\); its devices: phone-1, phone-2, phone-3, phone-4$"):
        pick(cluster, ["edge"])
    assert [d.name for d in pick(cluster, ["phone-2"]).devices] == ["phone-2"]
