"""Run a spec on local processes (bounded, every process killed) and the single-device reference."""

from __future__ import annotations

import json
from pathlib import Path

from edgeft.runtime.launcher import Supervisor
from edgeft.runtime.spec import RankSpec, RunSpec, RuntimeTrain

TASK = {"name": "sst2", "train_samples": 48, "dev_samples": 16, "max_length": 24, "seed": 0}


def spec(tmp: Path, model: Path, strategy: str, layout: dict, ranks: list[str], method="lora", servers=(),
         train: dict | None = None, **kw) -> RunSpec:
    # fp32 gradient all-reduce: the runs are compared with the single-device Trainer to 1e-4
    tr = {"epochs": 1, "batch_size": 8, "warmup_ratio": 0.0, "lr": 5e-3, "checkpoint_every": 2, "grad_sync": "fp32",
          **(train or {})}
    opts = {"r": 4, "alpha": 8, "dropout": 0.0} if method == "lora" else {}
    return RunSpec(run_dir=str(tmp), strategy=strategy, model=str(model), task=TASK, method=method,
                   method_options=opts, train=RuntimeTrain(**tr),
                   ranks=[RankSpec(name=n, kind="server" if n in servers else "device") for n in ranks],
                   layout=layout, link_mode=kw.pop("link_mode", "none"), timeout_s=kw.pop("timeout_s", 30),
                   heartbeat_s=0.5, evaluate=kw.pop("evaluate", False), **kw)


def run_local(s: RunSpec, timeout_s: float = 150.0):
    path = Path(s.run_dir) / "spec.json"
    s.save(path)
    sup = Supervisor(s, path, startup_grace_s=timeout_s, stale_after_s=timeout_s)
    try:
        sup.start()
        import threading

        timer = threading.Timer(timeout_s, sup.kill_all)
        timer.start()
        out = sup.watch()
        timer.cancel()
    finally:
        sup.kill_all()
    if out.status != "ok":
        logs = "\n".join(f"--- {s.ranks[r].name}\n{sup.tail(r, 40)}" for r in sup.procs)
        raise AssertionError(f"run {out.status}: {out.lost} {out.detail}\n{logs}")
    return {r.name: json.loads((Path(s.run_dir) / "ranks" / f"{r.name}.result.json").read_text()) for r in s.ranks}


def reference_losses(model: Path, s: RunSpec) -> list[float]:
    """The foundation's single-device Trainer on the same data, seed and schedule."""
    return reference_run(model, s)[0]


def reference_run(model: Path, s: RunSpec):
    """(losses, trained model, featurizer, task) of the single-device Trainer on the same data, seed, schedule."""
    from edgeft.data import TaskConfig, load_task
    from edgeft.data.features import Featurizer, objective_for
    from edgeft.methods import get_method
    from edgeft.models import load_backbone
    from edgeft.train.loop import TrainConfig, Trainer, seed_everything
    from edgeft.train.recipe import make_loss_fn
    from edgeft.train.setup import head_for

    seed_everything(s.train.seed)
    task = load_task(TaskConfig(**s.task))
    head = head_for(str(model), task, s.head)
    bb = load_backbone(str(model), head=head, num_labels=task.num_labels)
    feat = Featurizer(task, bb.tokenizer, objective_for(task, head), s.task["max_length"])
    method = get_method(s.method, s.method_options)
    net = method.prepare(bb, task)
    cfg = TrainConfig(epochs=s.train.epochs, batch_size=s.train.batch_size, lr=s.train.lr,
                      warmup_ratio=s.train.warmup_ratio, max_grad_norm=s.train.max_grad_norm, seed=s.train.seed,
                      scheduler=s.train.scheduler, device="cpu", precision=s.train.precision)
    tr = Trainer(net, method, feat, feat.encode(task.train), cfg, make_loss_fn(feat))
    return tr.fit().losses, net, feat, task


def assert_adapter_is_the_reference(model: Path, s: RunSpec, tol: float = 1e-4) -> None:
    """The run's adapter/ (written by the rank holding every trainable) loads as `edgeft eval` loads a finetune
    adapter and gives the single-device reference model's outputs on the dev rows."""
    import torch

    from edgeft.train.recipe import load_for_eval

    _, ref, feat, task = reference_run(model, s)
    _, loaded = load_for_eval(str(model), task, s.head, Path(s.run_dir) / "adapter")
    batch = feat.collate(feat.encode(task.dev[:8]))
    args = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    ref.eval(), loaded.eval()
    with torch.no_grad():
        want, got = ref(**args).logits, loaded(**args).logits
    assert torch.allclose(got, want, atol=tol, rtol=tol), float((got - want).abs().max())
