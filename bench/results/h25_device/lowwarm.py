"""h25 (README): warm SmolLM2's lowest blocks with LoRA, merge it, and save the backbone as a model folder that
PAC then caches as usual (`pac_vs_baselines.py --model FOLDER`). A diagnostic that chooses nothing.

h21 found LoRA's lead over PAC in the lowest blocks, which an activation cache leaves as they are. This asks
whether changing those blocks once, BEFORE the cache is filled, lets PAC's side network catch up:
  --mode full   LoRA on blocks 0..k-1 of the whole model (its LM head, the suite's objective): the gradient
                crosses all 30 blocks, so a warm epoch costs about one LoRA epoch (an upper bound: too slow for
                the issue's speed bar);
  --mode local  LoRA on a model cut after block k-1 with a trained linear classifier on its last token (a local
                loss): forward and backward through k of 30 blocks, about k/30 of a LoRA epoch;
  --mode copy   no training: the same folder path with the backbone's own weights (the control).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(BENCH))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", required=True)
    p.add_argument("--mode", choices=["full", "local", "copy"], required=True)
    p.add_argument("--blocks", type=int, default=4, help="k: LoRA on blocks 0..k-1")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--train-samples", type=int, default=1000)
    p.add_argument("--holdout", type=int, default=500)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--report", required=True, help="JSON: warm time, held-out score of the warm model")
    return p.parse_args(argv)


def warm(a) -> dict:
    """Train LoRA on the lowest blocks (mode full/local) and return their merged weights and measurements."""
    import torch

    import pac_vs_baselines as pvb
    from edgeft.data import TaskConfig, load_task
    from edgeft.data.features import Featurizer, objective_for
    from edgeft.methods import get_method
    from edgeft.train.evaluate import evaluate
    from edgeft.train.loop import Trainer, TrainConfig, resolve_device, seed_everything
    from edgeft.train.recipe import make_loss_fn
    from edgeft.train.setup import backbone_for, head_for

    device = resolve_device("auto")
    seed_everything(a.seed)
    task = load_task(TaskConfig(name=a.task, train_samples=a.train_samples, max_length=a.max_length, seed=a.seed))
    ns = argparse.Namespace(task=a.task, max_length=a.max_length, seed=a.seed, dev_file=None, text2_column=None,
                            holdout_beyond=None, holdout_min_words=None, holdout=a.holdout)
    task.dev = pvb.holdout_examples(task, ns)  # the suite's held-out TRAINING rows (never dev)
    head = head_for(a.model, task, "classifier" if a.mode == "local" else "auto")
    backbone = backbone_for(a.model, task, head)
    k = a.blocks
    options = {}
    if a.mode == "local":  # cut after block k-1: the classifier reads block k-1's last token through the final norm
        inner = backbone.model.model
        inner.layers = inner.layers[:k]
        backbone.model.config.num_hidden_layers = k
        if getattr(backbone.model.config, "layer_types", None):
            backbone.model.config.layer_types = backbone.model.config.layer_types[:k]
    else:
        options["layers"] = list(range(k))
    featurizer = Featurizer(task, backbone.tokenizer, objective_for(task, backbone.head), a.max_length)
    train_feats, hold_feats = featurizer.encode(task.train), featurizer.encode(task.dev)
    method = get_method("lora", options)
    seed_everything(a.train_seed)
    model = method.place(method.prepare(backbone, task), device)
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, device=str(device), seed=a.train_seed,
                      log_every=10**9)
    trainer = Trainer(model, method, featurizer, train_feats, cfg, make_loss_fn(featurizer), lambda m: {})
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = trainer.fit()
    if device.type == "cuda":
        torch.cuda.synchronize()
    fit_s = time.perf_counter() - t0
    metrics = evaluate(model, task, featurizer, hold_feats, 64, device, 8)
    merged = model.merge_and_unload()
    layers = merged.model.layers
    state = {f"model.layers.{i}.{n}": t.detach().to("cpu", torch.float32).clone()
             for i in range(k) for n, t in layers[i].state_dict().items()}
    return {"state": state, "fit_s": fit_s, "epoch_times_s": result.epoch_times_s, "steps": result.steps,
            "final_train_loss": sum(result.losses[-20:]) / max(len(result.losses[-20:]), 1),
            "warm_holdout_metric": metrics.get(task.metric_name), "metric_name": task.metric_name,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def write_folder(a, state: dict) -> None:
    """The backbone's own folder (tokenizer, config) with the warmed blocks' weights in place."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgeft.models.backbone import resolve

    src, _ = resolve(a.model)
    out = Path(a.out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "*.index.json"))
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    if state:
        missing = [n for n in state if n not in model.state_dict()]
        if missing:
            raise SystemExit(f"warmed weights the full model lacks: {missing[:3]}")
        model.load_state_dict(state, strict=False)
    model.save_pretrained(out)


def main(argv=None) -> None:
    a = parse_args(argv)
    if Path(a.out).exists():  # never replace a folder someone has (warm.sh writes fresh ones and removes them)
        raise SystemExit(f"--out {a.out}: already exists; give a new folder or remove this one first")
    report = {"args": vars(a)}
    if a.mode == "copy":
        write_folder(a, {})
    else:
        w = warm(a)
        write_folder(a, w.pop("state"))
        report.update(w)
    Path(a.report).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "args"}))


if __name__ == "__main__":
    main()
