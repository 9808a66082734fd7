"""The floor under a training epoch: one frozen forward of the backbone over the training set, and its tokens.

Times the backbone's forward (no autograd) over every training sentence in the trainer's batch order, in fp32
and in bf16 autocast, and counts the tokens a batch carries (padded to its longest sentence) and the real ones,
so an epoch can be set against the arithmetic it needs at the accelerator's peak (docs/benchmarks_pac.md,
"Performance"). Same options as pac_vs_baselines.py for the data and the random backbone.

  python bench/frozen_forward.py --model <smollm2 tokenizer folder> --random-llama smollm2-135m-shape \
    --train-samples 4000 --max-length 64 --batch-size 16 64 --out frozen.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The data and random-backbone options this script shares with fill_agreement.py."""
    from pac_vs_baselines import RANDOM_LLAMAS

    p.add_argument("--model", required=True, help="tokenizer source (alias or folder)")
    p.add_argument("--random-llama", choices=sorted(RANDOM_LLAMAS), default="smollm2-135m-shape")
    p.add_argument("--task", default="sst2")
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


def random_setup(args):
    """(device, task, backbone with random weights, featurizer, encoded training sentences) from add_data_args."""
    from pac_vs_baselines import random_backbone

    from edgeft.data import TaskConfig, load_task
    from edgeft.data.features import Featurizer, objective_for
    from edgeft.train.loop import resolve_device

    device = resolve_device(args.device)
    task = load_task(TaskConfig(name=args.task, train_samples=args.train_samples, max_length=args.max_length,
                                seed=args.seed))
    bb = random_backbone(args.random_llama, args.model, args.seed, device)
    feat = Featurizer(task, bb.tokenizer, objective_for(task, bb.head), args.max_length)
    return device, task, bb, feat, feat.encode(task.train)


def main(argv=None) -> dict:
    import torch

    from edgeft.train.batches import epoch_batches
    from edgeft.train.precision import Precision

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_args(p)
    p.add_argument("--batch-size", type=int, nargs="+", default=[16, 64])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device, task, bb, feat, feats = random_setup(args)
    model = bb.model
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n)
    out = {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
           "torch": torch.__version__, "backbone": f"random-llama-{args.random_llama}",
           "block_matmul_params": matmul_params, "sentences": len(feats), "runs": []}
    for bs in args.batch_size:
        batches = [feat.collate([feats[i] for i in b]) for b in epoch_batches(len(feats), bs, args.seed, 0)]
        padded = sum(int(b["input_ids"].numel()) for b in batches)
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        batches = [{k: v.to(device) for k, v in b.items() if k in ("input_ids", "attention_mask")} for b in batches]
        for name in args.precision:
            prec = Precision(name, device)
            with torch.no_grad(), prec.autocast():
                for b in batches[:3]:  # warm-up
                    model.model(**b)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for b in batches:
                    model.model(**b)  # the blocks and final norm (the verbalizer reads one position's logits)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
            row = {"batch_size": bs, "precision": name, "batches": len(batches), "padded_tokens": padded,
                   "real_tokens": real, "forward_s": seconds}
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
