"""Centralised MeZO probes on Dolly: which perturbed parameters, lr and batch move the loss fastest on CPU.

Validation: 96 rows drawn (seeded) from Dolly's *training* rows; training batches from 4,000 other
training rows; the held-out global_test rows are never used. SmolLM2-135M-Instruct, max_length 80 (as in
bench/fed_dolly.py), loss on response tokens only (edgeft's lm objective).

    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/fed_mezo_probe.py train '[{"name": "norms", "method":
        "full", "only": ["norm"], "lr": 1.5e-4, "eps": 1e-2, "batch": 2, "steps": 150, "every": 75}]'
    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/fed_mezo_probe.py diag '[{"name": "norms", "method":
        "full", "only": ["norm"], "groups": {"all": [""]}}]'
    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/fed_mezo_probe.py ref   # FedIT adapter, forward cost

`train` runs MeZO (edgeft's projected_gradient / apply_seed_update) and prints the validation loss every
`every` steps; `diag` estimates, per parameter group, from backprop gradients of 8 batches and Hutchinson
second differences along 8 random z: G = mean <g_i, g_j> (signal), N = mean ||g_i||^2, T = tr(H); the best
lr of SGD along random directions is about G / (N T) and its descent per step G^2 / (2 N T).
Results are appended to bench/results/federated/mezo_probe_{train,diag}.jsonl.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "federated"


def data():
    from edgeft.data import TaskConfig, load_task
    from edgeft.data.features import Featurizer, objective_for
    from edgeft.models import load_backbone
    from edgeft.train.recipe import head_for

    task = load_task(TaskConfig(name="dolly", max_length=80, seed=0, dev_samples=40))
    head = head_for("smollm2-135m", task, "auto")
    bb = load_backbone("smollm2-135m", head=head)
    feat = Featurizer(task, bb.tokenizer, objective_for(task, head), 80)
    perm = np.random.default_rng(1234).permutation(len(task.train))
    val = feat.encode([task.train[i] for i in perm[:96]])
    train = feat.encode([task.train[i] for i in perm[96:96 + 4000]])
    return task, bb, feat, val, train


class Probe:
    def __init__(self):
        from edgeft.train.recipe import make_loss_fn

        self.task, self.bb, self.feat, self.val, self.train = data()
        self.loss_fn = make_loss_fn(self.feat)
        self.base = copy.deepcopy(self.bb.model)

    @torch.no_grad()
    def val_loss(self, model) -> float:
        from edgeft.train.objective import forward

        model.eval()
        tot, n = 0.0, 0
        for i in range(0, len(self.val), 16):
            loss, _, k = forward(model, self.feat.collate(self.val[i:i + 16]), "lm")
            tot += float(loss) * k
            n += k
        return tot / n

    def build(self, cfg: dict):
        from edgeft.methods import get_method
        from edgeft.methods.mezo import named_trainables

        self.bb.model = copy.deepcopy(self.base)
        method = get_method(cfg["method"], cfg.get("options", {}))
        torch.manual_seed(0)
        model = method.prepare(self.bb, self.task)
        model.eval()
        named = named_trainables(method, model)
        if cfg.get("only"):
            named = [(n, p) for n, p in named if any(s in n for s in cfg["only"])]
        return model, named

    def train_run(self, cfg: dict) -> dict:
        from edgeft.methods.mezo import apply_seed_update, projected_gradient

        model, named = self.build(cfg)
        params = [p for _, p in named]
        rng = np.random.default_rng(cfg.get("seed", 0))
        rec = {**cfg, "dim": sum(p.numel() for p in params), "curve": []}
        l0 = self.val_loss(model)
        rec["curve"].append((0, l0, 0.0))
        print(cfg["name"], "dim", rec["dim"], "val0", round(l0, 4), flush=True)
        t_train, diffs = 0.0, []
        for step in range(1, cfg["steps"] + 1):
            batch = self.feat.collate([self.train[i] for i in rng.integers(len(self.train), size=cfg["batch"])])
            t0 = time.perf_counter()
            seed = int(rng.integers(1, 2**31 - 1))
            g, lp, lm = projected_gradient(params, seed, cfg["eps"], lambda: self.loss_fn(model, batch))
            apply_seed_update(params, seed, cfg["lr"] * g)
            t_train += time.perf_counter() - t0
            diffs.append(abs(lp - lm))
            if step % cfg["every"] == 0 or step == cfg["steps"]:
                loss = self.val_loss(model)
                rec["curve"].append((step, loss, t_train))
                print(f"  step {step} val {loss:.4f} train_s {t_train:.1f} "
                      f"med|dL| {np.median(diffs[-cfg['every']:]):.4f}", flush=True)
                if not np.isfinite(loss) or loss > l0 + 1.0:
                    break
        rec["s_per_step"] = t_train / step
        return rec

    def diag(self, cfg: dict) -> dict:
        from edgeft.methods.mezo import projected_gradient

        rng = np.random.default_rng(7)
        bs = int(os.environ.get("BS", "2"))
        batches = [self.feat.collate([self.train[i] for i in rng.integers(len(self.train), size=bs)])
                   for _ in range(8)]
        model, named = self.build(cfg)
        for p in model.parameters():
            p.requires_grad_(False)
        params = [p for _, p in named]
        for p in params:
            p.requires_grad_(True)
        t0 = time.perf_counter()
        grads = []
        for b in batches:
            model.zero_grad(set_to_none=True)
            self.loss_fn(model, b).backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in params]).double())
        gm = torch.stack(grads)
        n = len(grads)
        for p in params:
            p.requires_grad_(False)
        eps = cfg.get("eps", 1e-2)
        with torch.no_grad():
            l0s = [float(self.loss_fn(model, b)) for b in batches]
        offs = np.cumsum([0] + [p.numel() for p in params])
        groups = []
        for gname, subs in cfg.get("groups", {"all": [""]}).items():
            sel = [i for i, (name, _) in enumerate(named) if any(x in name for x in subs)]
            cols = torch.cat([torch.arange(offs[i], offs[i + 1]) for i in sel])
            gg = gm[:, cols] @ gm[:, cols].T
            big_n = float(gg.diag().mean())
            big_g = float((gg.sum() - gg.diag().sum()) / (n * (n - 1)))
            ts = []
            with torch.no_grad():
                for i, b in enumerate(batches):
                    _, lp, lm = projected_gradient([params[j] for j in sel], 1000 + i, eps,
                                                   lambda: self.loss_fn(model, b))
                    ts.append((lp + lm - 2 * l0s[i]) / eps ** 2)
            t = float(np.mean(ts))
            groups.append({"name": f"{cfg['name']}/{gname}", "dim": int(cols.numel()), "G": big_g, "N": big_n, "T": t,
                           "T_sd": float(np.std(ts)), "lr_star": big_g / (big_n * t) if t > 0 else None,
                           "descent_per_step": big_g ** 2 / (2 * big_n * t) if t > 0 else None})
        return {"cfg": cfg["name"], "groups": groups, "s": time.perf_counter() - t0}

    def reference(self) -> dict:
        from peft import PeftModel

        out = {"base_val": self.val_loss(self.bb.model)}
        adapter = ROOT / "runs" / "bench-fed-dolly-fedit" / "adapter"
        if adapter.exists():
            out["fedit_val"] = self.val_loss(PeftModel.from_pretrained(copy.deepcopy(self.base), str(adapter)))
        for bs in (1, 2, 4, 8):
            b = self.feat.collate(self.train[:bs])
            with torch.no_grad():
                self.loss_fn(self.bb.model, b)
                t0 = time.perf_counter()
                for _ in range(5):
                    self.loss_fn(self.bb.model, b)
            out[f"forward_s_batch{bs}"] = (time.perf_counter() - t0) / 5
        return out


def main() -> None:
    mode = sys.argv[1]
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    probe = Probe()
    OUT.mkdir(parents=True, exist_ok=True)
    if mode == "ref":
        print(json.dumps(probe.reference(), indent=1))
        return
    run = probe.train_run if mode == "train" else probe.diag
    for cfg in json.loads(sys.argv[2]):
        rec = run(cfg)
        print(json.dumps(rec) if mode == "diag" else "", flush=True)
        with open(OUT / f"mezo_probe_{mode}.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
