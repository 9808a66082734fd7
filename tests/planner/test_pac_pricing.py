"""runtime/plan.make_table prices PAC's side network from PAC's own options (not a 'rank' it lacks)."""

import json
from pathlib import Path

import pytest

from edgeft.data import TaskConfig, load_task
from edgeft.methods import get_method
from edgeft.models import load_backbone
from edgeft.models.arch import arch_from_hf_config
from edgeft.runtime.placement import make_table


@pytest.mark.parametrize("options", [{}, {"width": 16, "side_layers": 1, "heads": 2, "taps": "every:2"}])
def test_pac_table_counts_the_real_side_network(tiny_llama, options):
    task = load_task(TaskConfig(name="sst2", train_samples=8, dev_samples=4, max_length=16))
    bb = load_backbone(str(tiny_llama), head="causal_lm", num_labels=2)
    method = get_method("pac", {**options, "cache": "off"})
    model = method.prepare(bb, task)
    real = sum(p.numel() for p in method.trainable_parameters(model))
    arch = arch_from_hf_config(json.loads((Path(tiny_llama) / "config.json").read_text()), "tiny")
    table = make_table(arch, "pac", 4, 16, options, "causal_lm")
    assert table.all_trainable() == real
    assert table.trainable.sum() == real
