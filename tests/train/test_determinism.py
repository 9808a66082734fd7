"""train.deterministic: torch's deterministic kernels for one run, reported clearly, restored after."""

import os

import pytest
import torch
from torch._prims_common import alert_not_deterministic  # what torch's own kernels call to refuse

import edgeft.train.loop as loop
from edgeft.errors import ConfigError
from edgeft.runtime.spec import RuntimeTrain
from edgeft.train.determinism import CUBLAS_ENV, deterministic_kernels
from edgeft.train.recipe import config_from_dict, run_finetune


def _switches():
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark)


def test_a_deterministic_run_trains_with_deterministic_kernels_and_leaves_them_as_they_were(tmp_path, tiny_llama,
                                                                                            monkeypatch):
    seen, drive = [], loop.drive

    def spy(*a, **k):  # the trainer's driver, run as it is; records the switches while the run trains
        seen.append(_switches())
        return drive(*a, **k)

    monkeypatch.setattr(loop, "drive", spy)
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    before = _switches()
    for deterministic in (False, True):
        run_finetune(config_from_dict({
            "model": str(tiny_llama), "method": "lora", "out": str(tmp_path / f"run{deterministic}"),
            "task": {"name": "sst2", "train_samples": 16, "dev_samples": 4, "max_length": 16},
            "train": {"epochs": 1, "batch_size": 8, "deterministic": deterministic}}))
        assert _switches() == before
    assert seen == [before, (True, True, False)]
    assert os.environ[CUBLAS_ENV] == ":4096:8"  # cuBLAS reads it when it makes a workspace: set before the run


def test_an_operation_without_a_deterministic_kernel_is_named_and_the_switches_come_back():
    before = _switches()
    with pytest.raises(ConfigError, match=r"train\.deterministic: scatter_magic does not have a deterministic"):
        with deterministic_kernels(True):
            alert_not_deterministic("scatter_magic")
    assert _switches() == before
    with pytest.raises(RuntimeError, match="something else"):  # other errors pass through as they are
        with deterministic_kernels(True):
            raise RuntimeError("something else")
    assert _switches() == before


def test_a_cublas_setting_that_is_not_repeatable_is_refused_before_the_run(monkeypatch):
    monkeypatch.setenv(CUBLAS_ENV, ":0:0")
    with pytest.raises(ConfigError, match=f"{CUBLAS_ENV}=:0:0"):
        with deterministic_kernels(True):
            pass
    with deterministic_kernels(False):  # off: not its business
        pass


def test_launch_refuses_deterministic_rather_than_ignore_it():
    with pytest.raises(ValueError, match="deterministic is a knob of `edgeft finetune` only"):
        RuntimeTrain(deterministic=True)

