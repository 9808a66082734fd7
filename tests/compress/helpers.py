"""Adapters made the way `edgeft finetune` makes them (method.save + adapter note), with non-trivial weights."""

from pathlib import Path

import torch

from edgeft.data import TaskConfig, load_task
from edgeft.methods import get_method
from edgeft.methods.base import write_adapter_note
from edgeft.models import load_backbone


def make_adapter(model_path, out: Path, method: str = "lora", task_name: str = "shakespeare", options=None) -> Path:
    torch.manual_seed(1)
    task = load_task(TaskConfig(name=task_name, train_samples=4, dev_samples=4, max_length=32))
    bb = load_backbone(str(model_path), head="causal_lm")
    m = get_method(method, options or ({"init": "random"} if method == "prompt" else None))
    model = m.prepare(bb, task)
    with torch.no_grad():  # as if trained: LoRA B and BitFit biases away from their zero init
        for name, p in model.named_parameters():
            if "lora_B" in name or (method == "bitfit" and name.endswith(".bias")):
                p.normal_(0, 0.2)
    m.save(model, out)
    write_adapter_note(out, m, bb, task, {"max_length": 32})
    return out


def logits_of(model, ids=None):
    ids = ids if ids is not None else torch.arange(5, 45)[None]
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def cli(*args, input=None) -> str:
    """`edgeft ARGS` in this process (typer's runner); its stdout, after asserting it exited 0."""
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    result = CliRunner().invoke(build_app(), list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout
