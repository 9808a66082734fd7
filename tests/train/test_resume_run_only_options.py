"""`--resume` refuses other trainables, not another way of doing the same work."""

from __future__ import annotations

import pytest
import yaml

from edgeft.errors import ConfigError
from edgeft.train.rundir import check_resume_matches


def _started(tmp_path, options: dict) -> dict:
    config = {"model": "smollm2-135m", "method": "pac", "method_options": options, "head": "auto",
              "task": {"name": "sst2"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def test_a_resume_may_move_the_pac_cache_or_skip_its_checks(tmp_path):
    """A resumed PAC run whose only change was cache_dir (the disk filled up, say) or verify=false was refused as
    'started with other trainables'."""
    then = _started(tmp_path, {"cache": "disk"})
    check_resume_matches(tmp_path, {**then, "method_options": {"cache": "disk", "cache_dir": str(tmp_path / "c"),
                                                               "verify": False, "on_corrupt": "recompute"}})


def test_a_resume_with_another_side_network_is_still_refused(tmp_path):
    then = _started(tmp_path, {"cache": "disk"})
    with pytest.raises(ConfigError, match=r"--resume: the run in .* was started with other trainables"):
        check_resume_matches(tmp_path, {**then, "method_options": {"cache": "disk", "width": 8}})
    with pytest.raises(ConfigError, match="other trainables"):  # int8 taps against exact ones: other training
        check_resume_matches(tmp_path, {**then, "method_options": {"cache": "disk", "cache_dtype": "fp32"}})


def test_a_stopped_pac_run_resumes_with_its_disk_cache_elsewhere_onto_the_same_weights(tmp_path, tiny_llama):
    """End to end: stopped at step 2, resumed with another cache_dir and verify=false; the weights are those of a
    run never stopped (the cache is filled again where it is asked for)."""
    import torch

    from edgeft.processes import Interrupted
    from edgeft.train.recipe import config_from_dict, run_finetune
    from test_finetune_interrupt import _signal_at, _trainables

    def cfg(out, options, **top):
        return config_from_dict({
            "model": str(tiny_llama), "method": "pac", "out": str(out), "method_options": options,
            "task": {"name": "sst2", "train_samples": 24, "dev_samples": 8, "max_length": 24},
            "train": {"epochs": 2, "batch_size": 8, "lr": 5e-3}, **top})

    run_finetune(cfg(tmp_path / "straight", {"cache_dir": str(tmp_path / "c0")}))
    with pytest.raises(Interrupted):
        run_finetune(cfg(tmp_path / "stopped", {"cache_dir": str(tmp_path / "c1")}), progress_factory=_signal_at(2),
                     say=lambda m: None)
    run_finetune(cfg(tmp_path / "stopped", {"cache_dir": str(tmp_path / "c2"), "verify": False}, resume=True))
    assert any((tmp_path / "c2").iterdir())
    a, b = _trainables(tmp_path / "straight"), _trainables(tmp_path / "stopped")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
