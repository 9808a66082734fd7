"""Where bf16 LoRA's NaN on CUDA first appears (issue 18): step by step, loss, gradients or weights.

CUDA only. LoRA on the random-weight SmolLM2-135M shape, SST-2 (4,000 sentences, max length 64, batch 16), one
epoch in bf16 autocast with the benchmark's optimizer (edgeft.train.optim.build_optimizer: fused AdamW on CUDA).
Every step checks the loss, then every gradient, then (after the step) every trainable weight; at the first
non-finite value it prints which, the step, the batch's lengths and padding, the last finite steps' loss and
gradient norm, and replays that batch's forward with hooks to name the first module whose output is
non-finite, under each SDPA backend. The argument is a folder holding bench/pac_vs_baselines.py and smol-tok/:

  python3 bench/bf16_nan_probe.py FOLDER [--steps N] [--optimizer fused|plain]
"""
import argparse
import contextlib
import json
import sys

import torch

ap = argparse.ArgumentParser()
ap.add_argument("folder")
ap.add_argument("--steps", type=int, default=250)
ap.add_argument("--optimizer", choices=["fused", "plain"], default="fused")
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--device", default="cuda")
ap.add_argument("--shape", default="smollm2-135m-shape", help="tiny: a CPU smoke check of this script")
args = ap.parse_args()
sys.path.insert(0, args.folder + "/bench")
from pac_vs_baselines import random_backbone  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from edgeft.data import TaskConfig, load_task  # noqa: E402
from edgeft.data.features import Featurizer, objective_for  # noqa: E402
from edgeft.methods import get_method  # noqa: E402
from edgeft.train.batches import epoch_batches  # noqa: E402
from edgeft.train.recipe import make_loss_fn  # noqa: E402

dev = torch.device(args.device)
task = load_task(TaskConfig(name="sst2", train_samples=4000, max_length=64, seed=0))
bb = random_backbone(args.shape, args.folder + "/smol-tok", 0, dev)
feat = Featurizer(task, bb.tokenizer, objective_for(task, bb.head), 64)
feats = feat.encode(task.train)
model = get_method("lora").prepare(bb, task).to(dev)
loss_fn = make_loss_fn(feat)
named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
params = [p for _, p in named]
opt = torch.optim.AdamW(params, lr=5e-4, fused=args.optimizer == "fused" and dev.type == "cuda")
ac = lambda: torch.autocast(dev.type, dtype=torch.bfloat16)  # noqa: E731


def to_dev(batch):
    return {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}


def first_bad_module(batch, backend=None):
    """Replays the batch's forward with hooks; the first module (in call order) with a non-finite output."""
    found = []

    def hook(name):
        def check(_m, _inp, out):
            t = out[0] if isinstance(out, tuple) else out
            if torch.is_tensor(t) and not found and not torch.isfinite(t).all():
                found.append(name)
        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    ctx = sdpa_kernel([backend]) if backend else contextlib.nullcontext()
    try:
        with torch.no_grad(), ctx, ac():
            loss = loss_fn(model, batch)
    finally:
        for h in handles:
            h.remove()
    return {"module": found[0] if found else None, "loss": float(loss)}


history = []
model.train()
for step, idx in enumerate(epoch_batches(len(feats), args.batch_size, 0, 0)[: args.steps]):
    batch = to_dev(feat.collate([feats[i] for i in idx]))
    opt.zero_grad(set_to_none=True)
    with ac():
        loss = loss_fn(model, batch)
    what = None
    if not torch.isfinite(loss):
        what = "loss"
    else:
        loss.backward()
        bad = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            what = f"gradient of {bad[0]} ({len(bad)} tensors)"
        else:
            gnorm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
            opt.step()
            bad = [n for n, p in named if not torch.isfinite(p).all()]
            if bad:
                what = f"weight {bad[0]} after the step ({len(bad)} tensors)"
    if what is None:
        history.append({"step": step, "loss": float(loss), "grad_norm": gnorm})
        continue
    mask = batch["attention_mask"]
    report = {"first_non_finite": what, "step": step, "lengths": mask.sum(1).tolist(),
              "left_padded": bool((mask[:, 0] == 0).any()), "last_finite_steps": history[-5:]}
    model.eval()
    report["replay_default"] = first_bad_module(batch)
    for name, backend in (("math", SDPBackend.MATH), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        try:
            report[f"replay_{name}"] = first_bad_module(batch, backend)
        except RuntimeError as err:
            report[f"replay_{name}"] = str(err)[:160]
    print(json.dumps(report), flush=True)
    break
else:
    print(json.dumps({"first_non_finite": None, "steps": len(history), "last": history[-3:]}), flush=True)
