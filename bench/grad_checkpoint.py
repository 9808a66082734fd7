"""What `finetune --grad-checkpoint` trades: peak memory against step time, for LoRA and full fine-tuning of a
SmolLM2-135M-shaped Llama (random weights: memory and time depend on shapes only) on GSM8K-length rows.

Each configuration runs in a process of its own (a fresh peak): warm-up steps, then timed ones of edgeft's own
training step (train.objective.forward, the method's train_step, AdamW). On CUDA the peak is
torch.cuda.max_memory_allocated; on CPU the process's peak RSS.

  python bench/grad_checkpoint.py --device cuda --batch-size 16 --length 384 --out bench/results/grad_checkpoint.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def one(method: str, checkpoint: bool, device: str, batch: int, length: int, steps: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgeft.data.tasks import load_task
    from edgeft.methods import get_method
    from edgeft.models.backbone import Backbone, arch_of
    from edgeft.train import recompute
    from edgeft.train.objective import forward
    from pac_vs_baselines import RANDOM_LLAMAS

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True,
                      **RANDOM_LLAMAS["smollm2-135m-shape"])
    with torch.device(device):
        hf = LlamaForCausalLM(cfg)
    backbone = Backbone(name="random-smollm2-shape", path="random", model=hf, tokenizer=None, arch=arch_of(cfg),
                        head="causal_lm")
    m = get_method(method)
    model = m.place(m.prepare(backbone, load_task("gsm8k", train_samples=1, dev_samples=1)), device)
    params = m.trainable_parameters(model)
    if checkpoint:
        recompute.enable(model)
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, cfg.vocab_size, (batch, length), device=device)
    labels = ids.clone()
    labels[:, : length // 2] = -100  # the prompt half carries no loss, as a generation row's
    batch_ = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    model.train()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for i in range(steps + 2):
        if i == 2 and device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        loss = forward(model, batch_, "lm")[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"method": method, "grad_checkpoint": checkpoint, "peak_mb": round(peak, 1),
            "step_s": sum(times) / len(times), "loss": float(loss), "trainable": sum(p.numel() for p in params)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=int, default=384)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=["lora", "full"])
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # METHOD on|off: a child process's run
    p.add_argument("--out", type=Path, default=Path("bench/results/grad_checkpoint.json"))
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1] == "on", a.device, a.batch_size, a.length, a.steps)))
        return
    rows = []
    for method in a.methods:
        for flag in ("off", "on"):
            out = subprocess.run([sys.executable, __file__, "--one", method, flag, "--device", a.device,
                                  "--batch-size", str(a.batch_size), "--length", str(a.length), "--steps",
                                  str(a.steps)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    import torch

    result = {"device": torch.cuda.get_device_name() if a.device == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "batch": a.batch_size, "length": a.length, "steps": a.steps,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
