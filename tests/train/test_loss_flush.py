"""The trainer reads step losses from the device in bulk; order and values must survive the batching."""

import math

import torch

from edgeft.train.loop import Trainer, TrainResult


def _bare_trainer():
    t = object.__new__(Trainer)  # only the loss bookkeeping is under test
    t._result, t._pending = TrainResult(), []
    return t


def test_flush_keeps_order_of_tensors_and_floats():
    t = _bare_trainer()
    t._pending = [torch.tensor(0.5), 0.25, torch.tensor([1.5]), torch.tensor(2.0, dtype=torch.bfloat16), 3.0]
    t._flush_losses()
    assert t._result.losses == [0.5, 0.25, 1.5, 2.0, 3.0]
    assert t._last_loss == 3.0 and t._pending == []


def test_flush_with_nothing_pending_keeps_last_loss():
    t = _bare_trainer()
    t._flush_losses()
    assert t._result.losses == [] and math.isnan(t._last_loss)
    t._pending = [torch.tensor(4.0)]
    t._flush_losses()
    t._flush_losses()
    assert t._result.losses == [4.0] and t._last_loss == 4.0
