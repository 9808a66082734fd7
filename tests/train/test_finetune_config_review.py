"""Configuration faults a new user met in `edgeft finetune` (found by trying them, 2026-12-07): a run's config.yaml
that replaced another run when reused, an --lr the zeroth-order methods ignored, YAML 1.1's base-60 numbers, raw
tracebacks for odd option values, and a bad method option that left a folder blocking the corrected command."""

import json

import pytest
import torch
import yaml

from edgeft.config import parse_options
from edgeft.errors import ConfigError
from edgeft.train.recipe import FinetuneConfig, config_from_dict, run_finetune


def _cfg(model, out, method="lora", options=None, **train):
    return config_from_dict({
        "model": str(model), "method": method, "out": str(out), "method_options": options or {},
        "task": {"name": "sst2", "train_samples": 16, "dev_samples": 8, "max_length": 24},
        "train": {"epochs": 1, "batch_size": 8, **train},
    })


def test_a_runs_config_yaml_reused_does_not_overwrite_another_run(tmp_path, tiny_llama):
    """config.yaml kept `overwrite: true`, so `--config <run>/config.yaml --out <other run>` replaced the other
    run without --overwrite."""
    first = tmp_path / "first"
    run_finetune(_cfg(tiny_llama, first, lr=1e-3).model_copy(update={"overwrite": True}))
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert "overwrite" not in saved and "resume" not in saved
    other = tmp_path / "other"
    run_finetune(_cfg(tiny_llama, other, lr=1e-3))
    before = (other / "metrics.json").read_bytes()
    reused = FinetuneConfig.load(first / "config.yaml", {"out": str(other)})
    with pytest.raises(ConfigError, match="not empty"):
        run_finetune(reused)
    assert (other / "metrics.json").read_bytes() == before


@pytest.mark.parametrize("method", ["mezo", "fwdgrad"])
def test_lr_reaches_the_zeroth_order_methods(tmp_path, tiny_llama, method):
    """--lr was recorded and ignored: MeZO at lr 0.5 and at 1e-9 trained bit-identical weights."""
    weights = []
    for i, lr in enumerate((1e-2, 1e-7)):
        out = tmp_path / f"r{i}"
        run_finetune(_cfg(tiny_llama, out, method, {"base": "bitfit"}, lr=lr))
        assert yaml.safe_load((out / "config.yaml").read_text())["method_options"]["lr"] == lr
        weights.append(torch.load(out / "checkpoint" / "state.pt", weights_only=True)["trainables"])
    assert any(not torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    with pytest.raises(ConfigError, match=r"--lr\) 0\.01 and method_options.lr \(--option lr=\) 0\.001 disagree"):
        _cfg(tiny_llama, tmp_path / "x", method, {"lr": 1e-3}, lr=1e-2)


def test_option_values_read_as_yaml_1_2_numbers_and_bad_ones_are_named():
    got = parse_options(["pattern=2:4", "taps=1:30", "lr=1e-4", "r=8", "x=010", "t=[q, v]"])
    assert got == {"pattern": "2:4", "taps": "1:30", "lr": 1e-4, "r": 8, "x": "010", "t": ["q", "v"]}
    with pytest.raises(ConfigError, match=r"--option 'r=\[8': the value is not valid YAML"):
        parse_options(["r=[8"])


def test_a_config_files_sparsity_pattern_stays_text(tmp_path):
    from edgeft.compress.pipeline import CompressConfig

    path = tmp_path / "c.yaml"
    path.write_text("model: smollm2-135m\nmethod: sparsegpt\nout: x\noptions: {sparsity: 0.5, pattern: 2:4}\n")
    assert CompressConfig.load(path, {}).options["pattern"] == "2:4"  # was 124, then 'Input should be a string'


def test_a_number_as_a_top_level_key_is_named(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("1: 2\nmodel: smollm2-135m\ntask: sst2\n")
    with pytest.raises(ConfigError, match="unknown key"):
        FinetuneConfig.load(path, {})


@pytest.mark.parametrize("options, says", [({"taps": "every:x"}, "is not 'all', 'every:K'"),
                                           ({"taps": [7]}, r"block\(s\) \[7\] outside")])
def test_a_bad_method_option_writes_nothing_so_the_corrected_command_can_run(tmp_path, tiny_llama, options, says):
    """The error came after config.yaml and events.jsonl were written (and the first evaluation had run), so the
    corrected command was refused: 'the output folder is not empty (config.yaml, events.jsonl)'."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=says):
        run_finetune(_cfg(tiny_llama, out, "pac", options, lr=1e-3))
    assert not out.exists() or not any(out.iterdir())
    metrics = run_finetune(_cfg(tiny_llama, out, "pac", {"taps": "all"}, lr=1e-3))
    assert json.loads((out / "metrics.json").read_text())["method"] == metrics["method"] == "pac"


def test_resume_compares_method_options_as_they_act_not_as_typed(tmp_path):
    """`--resume --option r=8` over a run started without it (r=8 is LoRA's default) was refused as 'other
    trainables ({} then, {'r': 8} now)'."""
    from edgeft.train.rundir import check_resume_matches

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": "m", "method": "lora", "method_options": {}}))
    check_resume_matches(tmp_path, {"model": "m", "method": "lora", "method_options": {"r": 8}})
    with pytest.raises(ConfigError, match="other trainables"):
        check_resume_matches(tmp_path, {"model": "m", "method": "lora", "method_options": {"r": 4}})


def test_a_method_option_given_flat_points_to_method_options(tmp_path):
    """`r: 8` at the top of a finetune config was answered "did you mean 'lr'?": following it set the lr to 8."""
    path = tmp_path / "f.yaml"
    path.write_text("task: sst2\nr: 8\n")
    with pytest.raises(ConfigError, match=r"r: an option of method lora: give it under method_options"):
        FinetuneConfig.load(path, {})


def test_a_compress_steps_flags_may_sit_at_the_top_of_its_config_file(tmp_path):
    from edgeft.compress.pipeline import CompressConfig

    path = tmp_path / "c.yaml"
    path.write_text("model: smollm2-135m\nmethod: sparsegpt\nsparsity: 0.5\npattern: 2:4\nout: x\n")
    assert CompressConfig.load(path, {}).options == {"sparsity": 0.5, "pattern": "2:4"}  # was 'unknown key'


def test_lora_target_modules_that_match_nothing_name_the_modules_there_are(tmp_path, tiny_llama):
    """PEFT's NoMatchingPeftModuleError came through as a traceback, with no word of the names to use."""
    with pytest.raises(ConfigError, match=r"target_modules \['q', 'v'\] match no module of .*q_proj"):
        run_finetune(_cfg(tiny_llama, tmp_path / "run", "lora", {"target_modules": ["q", "v"]}, lr=1e-3))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["mezo", "fwdgrad"])
def test_grad_accum_is_refused_for_a_method_without_gradients(method):
    """Each batch took a whole step of its own: --grad-accum 4 trained as --grad-accum 1, without a word."""
    with pytest.raises(ConfigError, match=rf"--grad-accum\) 4: {method} steps on each batch's own loss"):
        config_from_dict({"model": "m", "method": method, "task": {"name": "sst2"}, "train": {"grad_accum": 4}})
    config_from_dict({"model": "m", "method": "lora", "task": {"name": "sst2"}, "train": {"grad_accum": 4}})


def test_an_option_given_twice_or_without_a_name_is_refused():
    """`--option bits=4 --option bits=8` kept the last without a word; `--option =4` said 'unknown option'."""
    with pytest.raises(ConfigError, match=r"--option bits is given twice \(bits=4 and 'bits=8'\)"):
        parse_options(["bits=4", "bits=8"])
    with pytest.raises(ConfigError, match=r"--option '=4': no option name before '='"):
        parse_options(["=4"])
