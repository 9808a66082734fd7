import json

import pytest
import torch
import yaml

from edgeft.errors import ConfigError
from edgeft.train.recipe import config_from_dict, run_finetune


def _cfg(model, out, **train):
    return config_from_dict({
        "model": str(model), "method": "lora", "out": str(out),
        "task": {"name": "sst2", "train_samples": 24, "dev_samples": 8, "max_length": 24},
        "train": {"epochs": 2, "batch_size": 8, "lr": 5e-3, **train},
    })


def _trainables(run_dir):
    return torch.load(run_dir / "checkpoint" / "state.pt", weights_only=False)["trainables"]


def test_finetune_writes_the_run_directory(tmp_path, tiny_llama):
    metrics = run_finetune(_cfg(tiny_llama, tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.json", "events.jsonl", "training.png", "adapter/adapter_config.json",
                 "adapter/edgeft_adapter.json"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("dev_metric", "metric_name", "epoch_times_s", "train_time_s", "peak_memory_mb",
                "trainable_params", "total_params"):
        assert key in saved
    assert saved["metric_name"] == "accuracy" and len(saved["epoch_times_s"]) == 2
    assert 0 < saved["trainable_params"] < saved["total_params"]
    assert saved["peak_memory_mb"] > 0
    assert yaml.safe_load((run / "config.yaml").read_text())["method"] == "lora"
    kinds = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("eval") == 3
    assert metrics["dev_metric"] == saved["dev_metric"]


def test_resume_continues_to_the_same_weights(tmp_path, tiny_llama):
    # A constant schedule makes "1 epoch of 1" identical to "epoch 1 of 2", so stopping after epoch 1
    # and resuming must land on the weights of the uninterrupted 2-epoch run (optimizer state, RNG included).
    const = {"scheduler": "constant", "warmup_ratio": 0.0}
    run_finetune(_cfg(tiny_llama, tmp_path / "straight", **const))
    first = _cfg(tiny_llama, tmp_path / "resumed", **const)
    first.train.epochs = 1
    run_finetune(first)
    again = _cfg(tiny_llama, tmp_path / "resumed", **const)
    again.resume = True
    metrics = run_finetune(again)
    assert metrics["resumed_from"]["epoch"] == 1
    a, b = _trainables(tmp_path / "straight"), _trainables(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_unknown_config_keys_are_named():
    with pytest.raises(ConfigError, match=r"train.epocs: unknown key"):
        config_from_dict({"task": {"name": "sst2"}, "train": {"epocs": 3}}, "my.yaml")
    with pytest.raises(ConfigError, match=r"my.yaml: colour: unknown key"):
        config_from_dict({"task": {"name": "sst2"}, "colour": "blue"}, "my.yaml")


def test_a_device_this_machine_lacks_is_a_clear_error_not_an_assertion_from_torch():
    """`--device cuda` on a CPU-only torch failed deep inside the model's first .to() with an AssertionError."""
    from edgeft.train.loop import resolve_device

    with pytest.raises(ConfigError, match="device 'gpu': not a torch device name"):
        resolve_device("gpu")
    with pytest.raises(ConfigError, match=r"device 'cuda:99': (this torch .* sees no CUDA GPU|there are \d+ CUDA GPU)"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device 'cuda': this torch .* sees no CUDA GPU; use --device cpu"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu" and resolve_device("auto").type in ("cpu", "cuda")


def test_an_adapter_evaluated_on_a_backbone_that_cannot_take_its_head_names_the_one_it_was_trained_on(
        tmp_path, tiny_llama, tiny_bert):
    from edgeft.errors import EdgeftError
    from edgeft.data import TaskConfig
    from edgeft.train.recipe import run_eval

    run_finetune(_cfg(tiny_llama, tmp_path / "run", epochs=1))  # a causal LM's adapter (label words, LM head)
    with pytest.raises(EdgeftError, match=r"run/adapter: this adapter was trained on '.*' with a causal_lm head, "
                                          r"which --model .* cannot give: .*encoder"):
        run_eval(str(tiny_bert), TaskConfig(name="sst2", dev_samples=4, max_length=24), tmp_path / "run" / "adapter")
