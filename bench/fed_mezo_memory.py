"""MeZO's peak memory against inference memory for the same batch (SmolLM2-135M on Dolly rows, CPU).

Each phase runs in a fresh Python process so that its peak RSS (edgeft's PeakMemory: the process's peak
resident set, reset after the model is loaded) belongs to that phase alone:
  inference  - the training objective's forward pass under no_grad (what evaluating the loss costs)
  mezo       - MeZO steps on all parameters (full fine-tuning by zeroth order)
  mezo-lora  - MeZO steps on LoRA adapters
  backprop   - one full fine-tuning step with AdamW (reference: what MeZO avoids)

    flock /tmp/edgeft-cpu.lock .venv/bin/python bench/fed_mezo_memory.py --batch 4 --length 128
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "federated"
PHASES = ["inference", "mezo", "mezo-lora", "backprop"]


def measure(phase: str, model: str, batch: int, length: int, steps: int) -> dict:
    import torch

    from edgeft.data import TaskConfig, load_task
    from edgeft.data.features import Featurizer
    from edgeft.methods import get_method
    from edgeft.models import load_backbone
    from edgeft.train.meters import PeakMemory, current_rss_mb
    from edgeft.train.recipe import make_loss_fn

    task = load_task(TaskConfig(name="dolly", train_samples=batch, max_length=length, seed=0))
    bb = load_backbone(model)
    feat = Featurizer(task, bb.tokenizer, "lm", length)
    data = feat.collate(feat.encode(task.train))
    loss_fn = make_loss_fn(feat)
    if phase == "mezo":
        method = get_method("mezo", {"base": "full", "lr": 1e-6, "eps": 1e-3})
    elif phase == "mezo-lora":
        method = get_method("mezo", {"base": "lora", "lr": 1e-4, "eps": 1e-2})
    else:
        method = get_method("full")
    net = method.prepare(bb, task)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5) if phase == "backprop" else None
    tokens = int(data["attention_mask"].sum())
    loaded_mb = current_rss_mb()
    meter = PeakMemory("cpu").start()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        if phase == "inference":
            net.eval()
            with torch.no_grad():
                loss = float(loss_fn(net, data))
        elif phase == "backprop":
            net.train()
            out = loss_fn(net, data)
            out.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss = float(out)
        else:
            loss = method.train_step(net, data, loss_fn)
        times.append(time.perf_counter() - t0)
    return {"phase": phase, "peak_mb": meter.peak_mb(), "memory_kind": meter.kind, "loaded_mb": loaded_mb,
            "seconds_per_step": sum(times) / len(times), "steps": steps, "batch": batch, "max_length": length,
            "tokens": tokens, "loss": loss, "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--phase", choices=PHASES)
    ap.add_argument("--out", type=Path, default=OUT / "mezo_memory.json")
    args = ap.parse_args()
    if args.phase:  # child process
        print(json.dumps(measure(args.phase, args.model, args.batch, args.length, args.steps)))
        return
    rows = []
    for phase in PHASES:
        proc = subprocess.run([sys.executable, __file__, "--phase", phase, "--model", args.model, "--batch",
                               str(args.batch), "--length", str(args.length), "--steps", str(args.steps)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    by = {r["phase"]: r for r in rows}
    inf = by["inference"]["peak_mb"]
    result = {
        "model": args.model, "batch": args.batch, "max_length": args.length, "phases": rows,
        "mezo_over_inference": by["mezo"]["peak_mb"] / inf,
        "mezo_lora_over_inference": by["mezo-lora"]["peak_mb"] / inf,
        "backprop_over_inference": by["backprop"]["peak_mb"] / inf,
        "command": "flock /tmp/edgeft-cpu.lock .venv/bin/python bench/fed_mezo_memory.py "
                   f"--batch {args.batch} --length {args.length} --steps {args.steps}",
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k.endswith("inference")}, indent=1))


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["phases"]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    names = [r["phase"] for r in rows]
    loaded = [r["loaded_mb"] for r in rows]
    extra = [r["peak_mb"] - r["loaded_mb"] for r in rows]
    ax.bar(names, loaded, label="RSS before the step (weights are paged in lazily)")
    ax.bar(names, extra, bottom=loaded, label="added up to the peak of the step")
    inf = rows[0]["peak_mb"]
    ax.axhline(inf * 1.2, color="k", ls="--", lw=1, label="1.2 x inference peak")
    for i, r in enumerate(rows):
        ax.text(i, r["peak_mb"] + 20, f"{r['peak_mb'] / inf:.2f}x", ha="center", fontsize=9)
    ax.set(ylabel="peak RSS (MB)", title=f"{result['model']}, batch {result['batch']} x {result['max_length']} tokens")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
