"""A method may have its own default number of epochs (Method.default_epochs), taken when a run gives none:
PAC's cached epochs are cheap, so the quality suite's rule may give it a larger budget than TrainConfig's
default (issue 15). Explicit epochs (command line or config file) always win; None keeps TrainConfig's default.
The quality suite gives PAC the same default when neither --pac-config nor --pac-epochs sets its epochs."""

import json
from types import SimpleNamespace

import pytest

from edgeft.cli.bench import bench_script
from edgeft.methods import METHODS, get_method
from edgeft.train.loop import TrainConfig
from edgeft.train.recipe import config_from_dict, run_finetune


def test_pac_runs_ten_epochs_on_a_causal_lm_and_trainconfigs_default_on_an_encoder():
    """The quality suite's rule on held-out rows (bench/results/h14_device): 10 on SmolLM2, 3 stayed on MiniLM."""
    pac = get_method("pac", {})
    assert pac.epochs_for(TrainConfig(), "llama") == 10
    assert pac.epochs_for(TrainConfig(), "bert") == pac.epochs_for(TrainConfig()) == TrainConfig().epochs
    assert pac.epochs_for(TrainConfig(epochs=4), "llama") == 4


def test_epochs_for_prefers_what_the_run_gives(monkeypatch):
    monkeypatch.setattr(METHODS["pac"], "default_epochs", 6)
    pac, lora = get_method("pac", {}), get_method("lora", {})
    assert pac.epochs_for(TrainConfig()) == 6  # none given: the method's own
    assert pac.epochs_for(TrainConfig(epochs=1)) == 1  # given, even TrainConfig's default value: it wins
    assert pac.epochs_for(TrainConfig.model_validate({"epochs": 2})) == 2
    assert lora.epochs_for(TrainConfig()) == TrainConfig().epochs  # other methods: unchanged


def test_finetune_takes_pacs_epochs_for_the_backbones_family(monkeypatch, tmp_path, tiny_llama, tiny_bert):
    monkeypatch.setattr(METHODS["pac"], "causal_lm_epochs", 2)
    for model, expected in ((tiny_llama, 2), (tiny_bert, TrainConfig().epochs)):
        cfg = config_from_dict({"model": str(model), "method": "pac", "out": str(tmp_path / model.name),
                                "method_options": {"width": 8, "norm_samples": 8, "cache_dtype": "fp32"},
                                "task": {"name": "sst2", "train_samples": 16, "dev_samples": 8, "max_length": 24},
                                "train": {"batch_size": 8}, "eval_before": False})
        assert len(run_finetune(cfg)["epoch_times_s"]) == expected, model


@pytest.mark.parametrize("given, expected", [(None, 2), (1, 1)])
def test_finetune_runs_pacs_default_epochs_when_none_are_given(monkeypatch, tmp_path, tiny_bert, given, expected):
    monkeypatch.setattr(METHODS["pac"], "default_epochs", 2)
    train = {"batch_size": 8, **({"epochs": given} if given is not None else {})}
    cfg = config_from_dict({"model": str(tiny_bert), "method": "pac", "out": str(tmp_path / "run"),
                            "method_options": {"width": 8, "norm_samples": 8, "cache_dtype": "fp32"},
                            "task": {"name": "sst2", "train_samples": 16, "dev_samples": 8, "max_length": 24},
                            "train": train, "eval_before": False})
    metrics = run_finetune(cfg)
    assert len(metrics["epoch_times_s"]) == expected
    import yaml

    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["epochs"] == expected


def test_the_quality_suite_gives_pac_its_default_epochs(monkeypatch, tmp_path):
    q = bench_script("quality")
    args = q.parse_args(["--models", "m", "--tasks", "sst2", "--seeds", "0", "--methods", "lora,pac",
                         "--full-models", "", "--epochs", "3"])

    def epochs_of(runs):
        return {r["method"]: int(r["argv"][r["argv"].index("--epochs") + 1]) for r in runs}

    assert epochs_of(q.plan_runs(args, tmp_path)) == {"lora": 3, "pac": 3}
    monkeypatch.setattr(METHODS["pac"], "default_epochs", 6)
    assert epochs_of(q.plan_runs(args, tmp_path)) == {"lora": 3, "pac": 6}
    args.pac_epochs = 4  # --pac-epochs wins over the default, a configuration's epochs over both
    assert epochs_of(q.plan_runs(args, tmp_path)) == {"lora": 3, "pac": 4}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"options": {}, "epochs": 10}))
    args.pac_config = str(cfg)
    assert epochs_of(q.plan_runs(args, tmp_path)) == {"lora": 3, "pac": 10}
    assert q.pac_epochs(args, q.pac_config(args)) == 10
    assert q.pac_epochs(SimpleNamespace(pac_epochs=None, epochs=3), {"epochs": None}) == 6


def test_the_quality_suite_gives_pac_its_own_epochs_on_the_causal_lm_only(tmp_path):
    q = bench_script("quality")
    args = q.parse_args(["--models", "smollm2-135m,minilm-l6", "--tasks", "sst2", "--seeds", "0", "--methods",
                         "lora,pac", "--full-models", "", "--epochs", "3"])
    epochs = {(r["model"], r["method"]): int(r["argv"][r["argv"].index("--epochs") + 1])
              for r in q.plan_runs(args, tmp_path)}
    assert epochs == {("smollm2-135m", "lora"): 3, ("smollm2-135m", "pac"): 10, ("minilm-l6", "lora"): 3,
                      ("minilm-l6", "pac"): 3}
