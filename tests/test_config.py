"""The one config layer: every config names the file, the dotted field and what to do, the same way."""

import pytest

from edgeft.config import overlay, read_yaml
from edgeft.errors import ConfigError
from edgeft.federated.config import FederatedConfig
from edgeft.planner.cluster import load_cluster
from edgeft.train.recipe import FinetuneConfig


def _problems(err) -> list[str]:
    return str(err.value).splitlines()


def test_a_wrong_key_and_a_wrong_type_name_file_field_and_fix_in_two_configs(tmp_path):
    ft = tmp_path / "ft.yaml"
    ft.write_text("task: {name: sst2}\ntrain: {epocs: 3, lr: fast}\n")
    with pytest.raises(ConfigError) as err:
        FinetuneConfig.load(ft)
    head, *lines = _problems(err)
    assert head == f"{ft}: invalid finetune config (2 problems)"
    assert "  train.epocs: unknown key, did you mean 'epochs'?" in lines
    assert any(line.startswith("  train.lr: ") and "valid number" in line for line in lines), lines

    fed = tmp_path / "fed.yaml"
    fed.write_text("algorithm: fedit\nrounds_: 3\n")
    with pytest.raises(ConfigError, match=rf"^{fed}: rounds_: unknown key, did you mean 'rounds'\?$"):
        FederatedConfig.load(fed)

    cluster = tmp_path / "c.yaml"
    cluster.write_text("name: x\ndevices:\n  - {name: phone, compute: {flops: 1e10}, memory_gb: lots, memroy: 3}\n"
                       "servers:\n  - {name: s, compute: {flops: 1e12}, memory_gb: 8, band_mhz: 20}\n")
    with pytest.raises(ConfigError) as err:
        load_cluster(cluster)
    head, *lines = _problems(err)
    assert head == f"{cluster}: invalid cluster spec (2 problems)"
    assert any(line.startswith("  devices[0](phone).memory_gb: ") and "lots" in line for line in lines), lines
    assert "  devices[0](phone).memroy: unknown key, did you mean 'memory_gb'? (see docs/planner.md for the keys)" \
        in lines


def test_a_missing_key_says_what_it_is_and_the_command_line_goes_over_the_file(tmp_path):
    with pytest.raises(ConfigError, match="^command line: algorithm: required key is missing"):
        FederatedConfig.load(None, {"rounds": 2})
    f = tmp_path / "fed.yaml"
    f.write_text("algorithm: fedit\nrounds: 3\nmethod_options: {r: 4}\n")
    cfg = FederatedConfig.load(f, {"rounds": 5, "clients": None, "method_options": {"alpha": 8}})
    assert (cfg.rounds, cfg.clients, cfg.method_options) == (5, 10, {"r": 4, "alpha": 8})
    assert overlay({"train": {"lr": 1.0}}, {"train.epochs": 2, "task.name": "sst2"}) == {
        "train": {"lr": 1.0, "epochs": 2}, "task": {"name": "sst2"}}


def test_a_file_that_is_not_a_yaml_mapping_is_named(tmp_path):
    p = tmp_path / "x.yaml"
    with pytest.raises(ConfigError, match=f"{p}: config file not found"):
        read_yaml(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=f"{p}: expected a mapping"):
        read_yaml(p)
    p.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=rf"{p}: line \d+, column \d+ is not valid YAML"):
        read_yaml(p)


def test_the_runtime_trains_with_the_finetune_knobs_and_refuses_the_ones_it_cannot_honour():
    from edgeft.runtime.run import config_from
    from edgeft.runtime.spec import RuntimeTrain
    from edgeft.train.loop import TrainConfig

    assert issubclass(RuntimeTrain, TrainConfig)
    spec_train = RuntimeTrain(epochs=2, micro_batches=4)
    assert RuntimeTrain.model_validate(spec_train.model_dump()) == spec_train  # what the worker reads back
    with pytest.raises(ConfigError, match=r"^l.yaml: train: grad_accum is a knob of `edgeft finetune` only.*"
                                          r"micro_batches"):
        config_from({"cluster": "c.yaml", "task": {"name": "sst2"}, "train": {"grad_accum": 2}}, "l.yaml")


def test_a_launch_task_is_checked_as_finetune_checks_it_before_any_worker_starts(tmp_path):
    from edgeft.runtime.run import LaunchConfig

    f = tmp_path / "l.yaml"
    f.write_text("cluster: c.yaml\ntask: sst2\n")
    cfg = LaunchConfig.load(f, {"task.train_samples": 64})  # `task: NAME` takes command-line task keys
    assert cfg.task == {"name": "sst2", "train_samples": 64}
    with pytest.raises(ConfigError, match=rf"^{f}: task.train_sampels: unknown key, did you mean 'train_samples'\?$"):
        LaunchConfig.load(f, {"task.train_sampels": 64})


def test_a_wrong_grad_sync_names_the_field_and_its_choices():
    from edgeft.runtime.run import LaunchConfig

    cfg = LaunchConfig.load(None, {"cluster": "c.yaml", "task.name": "sst2"})
    assert cfg.train.grad_sync == "bf16"  # the default: gradients cross the links in bf16
    with pytest.raises(ConfigError, match=r"command line: train.grad_sync: Input should be 'fp32' or 'bf16'"):
        LaunchConfig.load(None, {"cluster": "c.yaml", "task.name": "sst2", "train.grad_sync": "fp16"})


def test_launch_takes_your_own_data_with_finetunes_options(tmp_path):
    """`edgeft launch --data-file F --text-column a ...`: the same data options as finetune, and the file names the
    task when no --task is given (before, launch had no column options and demanded a task name)."""
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app
    from edgeft.runtime.run import LaunchConfig

    cfg = LaunchConfig.load(None, {"cluster": "c.yaml", "task.data_file": "mine.jsonl", "task.text_column": "a"})
    assert cfg.task == {"data_file": "mine.jsonl", "text_column": "a", "name": "mine.jsonl"}
    with pytest.raises(ConfigError, match="needs a name: use --task NAME"):
        LaunchConfig.load(None, {"cluster": "c.yaml", "task.text_column": "a"})
    words = CliRunner().invoke(build_app(), ["launch", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--data-file", "--dev-file", "--task-kind", "--text-column", "--text2-column", "--label-column",
                   "--instruction-column", "--response-column"):
        assert option in words
    assert "--no-no-compute-emulation" not in words and "--no-compute-emulation" in words


def test_a_key_given_twice_is_named_with_both_lines_and_merge_keys_still_work(tmp_path):
    """A second `devices:` in a cluster file silently replaced the first list (its devices vanished from the
    plan); a repeated `memory_gb` kept the last value."""
    cluster = tmp_path / "dup.yaml"
    cluster.write_text("name: dup\ndevices:\n  - {name: a, compute: {flops: 1e10}, memory_gb: 4}\n"
                       "servers:\n  - {name: e, compute: {flops: 1e12}, memory_gb: 16, band_mhz: 10}\n"
                       "devices:\n  - {name: b, compute: {flops: 1e10}, memory_gb: 4}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: line 6, column 1 .*key 'devices' is given twice \(first on "
                                          r"line 2\); keep one"):
        load_cluster(cluster)
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  lr: 1e-3\n  epochs: 2\n  lr: 1e-4\n")
    with pytest.raises(ConfigError, match=r"line 4, column 3 .*key 'lr' is given twice \(first on line 2\)"):
        read_yaml(nested)
    merged = tmp_path / "merge.yaml"
    merged.write_text("base: &b {epochs: 1, lr: 0.1}\ntrain:\n  <<: *b\n  lr: 0.2\n")
    assert read_yaml(merged)["train"] == {"epochs": 1, "lr": 0.2}


@pytest.mark.parametrize("seed,word", [(-1, "greater than or equal to 0"), (2**32, "less than or equal to 4294967295")])
def test_a_seed_numpy_cannot_take_is_refused_by_name(tmp_path, seed, word):
    """--seed -1 ran up to the training loop and ended in numpy's traceback ('Seed must be between 0 and 2**32 - 1')."""
    ft, fed = tmp_path / "ft.yaml", tmp_path / "fed.yaml"
    ft.write_text(f"task: {{name: sst2}}\ntrain: {{seed: {seed}}}\n")
    fed.write_text(f"algorithm: fedit\nseed: {seed}\n")
    with pytest.raises(ConfigError, match=rf"train\.seed: Input should be {word}"):
        FinetuneConfig.load(ft)
    with pytest.raises(ConfigError, match=rf"seed: Input should be {word}"):
        FederatedConfig.load(fed)
