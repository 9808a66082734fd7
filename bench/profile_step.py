"""Where a training step's time goes: the Trainer's own step (collate, copy, forward, backward, optimizer) profiled.

Builds the run bench/pac_vs_baselines.py builds (random-weight Llama shape, the task, the method, the Trainer with
its precision), runs warm-up steps, then: the wall time of `--steps` steps (synchronised, no profiler); one step
under a dispatch mode that counts every aten op by its input dtypes (how many casts, which dtype each matrix
product runs in, any op that syncs the host); and `--steps` steps under torch.profiler, written as the top rows by
device time (CUDA) or CPU time (CPU). One text file per precision in --out-dir.

  python bench/profile_step.py --model <tokenizer folder> --random-llama smollm2-135m-shape --batch-size 64 \
    --precision fp32 bf16 --steps 10 --out-dir /tmp/prof
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# aten ops that read a device value on the host (a sync on CUDA)
SYNC_OPS = ("aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::is_nonzero", "aten::equal")
CAST_OPS = ("aten::_to_copy", "aten::to", "aten::copy_")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul")


def count_ops(fn) -> dict:
    """Every aten op `fn()` dispatches, keyed 'op(dtypes of its tensor inputs)' -> calls."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    counts = collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            dtypes = ",".join(str(t.dtype).replace("torch.", "") for t in tree_leaves((args, kwargs or {}))
                              if isinstance(t, torch.Tensor))
            counts[f"{func.overloadpacket.__name__}({dtypes})"] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return dict(counts.most_common())


def summarise_counts(counts: dict) -> dict:
    def total(names):
        return sum(n for k, n in counts.items() if k.split("(")[0] in {x.split("::")[1] for x in names})

    by_dtype = collections.Counter()
    for k, n in counts.items():
        if k.split("(")[0] in {x.split("::")[1] for x in MATMUL_OPS}:
            by_dtype[k.split("(")[1].rstrip(")")] += n
    return {"ops": sum(counts.values()), "casts_and_copies": total(CAST_OPS), "host_reads": total(SYNC_OPS),
            "matmuls_by_input_dtypes": dict(by_dtype)}


def main(argv=None) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from pac_vs_baselines import RANDOM_LLAMAS, method_of, random_backbone

    from edgeft.data import TaskConfig, load_task
    from edgeft.data.features import Featurizer, objective_for
    from edgeft.methods import get_method
    from edgeft.train import precision as precision_module
    from edgeft.train.batches import epoch_batches
    from edgeft.train.loop import Trainer, TrainConfig, TrainResult, resolve_device, seed_everything
    from edgeft.train.recipe import make_loss_fn

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="tokenizer source (alias or folder)")
    p.add_argument("--random-llama", choices=sorted(RANDOM_LLAMAS), default="smollm2-135m-shape")
    p.add_argument("--task", default="sst2")
    p.add_argument("--variant", default="lora", choices=["lora", "full"])
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                   help="precisions to profile, in order; bf16-all / fp16-all: with FROZEN_CAST=all (bf16: linear)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--cast-frozen-on-cpu", action="store_true",
                   help="analysis on a CPU: store the frozen weights in the compute dtype as the Trainer does on CUDA")
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = load_task(TaskConfig(name=args.task, train_samples=args.train_samples, max_length=args.max_length,
                                seed=args.seed))
    batches = epoch_batches(len(task.train), args.batch_size, args.seed, 0)
    need = args.warmup + 2 * args.steps + 1
    batches = (batches * (need // len(batches) + 1))[:need]
    cuda = device.type == "cuda"
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    summary = {}
    for entry in args.precision:
        precision, _, scope = entry.partition("-")
        precision_module.FROZEN_CAST = scope or "linear"
        seed_everything(args.seed)
        bb = random_backbone(args.random_llama, args.model, args.seed, device)
        feat = Featurizer(task, bb.tokenizer, objective_for(task, bb.head), args.max_length)
        feats = feat.encode(task.train)
        name, options, lr = method_of(args.variant, argparse.Namespace(lr=[], lora_option=[], pac_option=[],
                                                                        taps=None))
        method = get_method(name, options)
        model = method.place(method.prepare(bb, task), device)
        cfg = TrainConfig(epochs=1, batch_size=args.batch_size, lr=lr, device=str(device), seed=args.seed,
                          log_every=10**9, precision=precision)
        trainer = Trainer(model, method, feat, feats, cfg, make_loss_fn(feat))
        if args.cast_frozen_on_cpu and not cuda:  # Precision.cast_frozen acts on CUDA only
            trainer.precision.device = torch.device("cuda")
            trainer.frozen_cast = trainer.precision.cast_frozen(model)  # the scope set above
            trainer.precision.device = device
        trainer._result, trainer._resume_from = TrainResult(), None
        trainer.start()
        trainer.epoch_start(0, 0)
        it = iter(enumerate(batches))

        def steps(n):
            for _ in range(n):
                b, idx = next(it)
                trainer.step(0, b, idx, False)
            trainer._flush_losses()
            if cuda:
                torch.cuda.synchronize()

        steps(args.warmup)
        t = time.perf_counter()
        steps(args.steps)
        step_ms = (time.perf_counter() - t) / args.steps * 1e3
        counts = count_ops(lambda: steps(1))
        tables, busy_us, kernels, runtime, prof_ms = [], 0.0, 0.0, {}, None
        try:
            t = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
                steps(args.steps)
            prof_ms = round((time.perf_counter() - t) / args.steps * 1e3, 2)
            events = prof.key_averages()
            runtime = {e.key: e.count for e in events if e.key.startswith(("cuda", "cuLaunch"))}
            kernels = sum(n for k, n in runtime.items() if "Launch" in k) / args.steps
            # the GPU's busy time: the kernels' own rows (operator rows carry the same time again)
            busy_us = sum(e.self_device_time_total for e in events
                          if e.device_type == torch.autograd.DeviceType.CUDA) if cuda else 0.0
            tables = [f"== top {args.rows} by {sort} over {args.steps} steps",
                      events.table(sort_by=sort, row_limit=args.rows),
                      f"== top {args.rows} by cpu_time_total",
                      events.table(sort_by="cpu_time_total", row_limit=args.rows)]
        except Exception as err:  # a profiler without CUPTI: the timings and op counts still come back
            tables = [f"== profiler failed: {type(err).__name__}: {err}"]
        syncs = {k: n for k, n in runtime.items() if "Synchronize" in k or "Memcpy" in k}
        head = {"run": entry, "precision": trainer.precision.name, "frozen_cast_scope": precision_module.FROZEN_CAST,
                "variant": args.variant, "batch_size": args.batch_size,
                "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "matmul_precision":
                torch.get_float32_matmul_precision(), "ms_per_step_unprofiled": round(step_ms, 2),
                "ms_per_step_profiled": prof_ms,
                "frozen_tensors_cast": getattr(trainer, "frozen_cast", None),
                "gpu_busy_ms_per_step": round(busy_us / 1e3 / args.steps, 2), "kernel_launches_per_step": kernels,
                "runtime_calls_in_profile": syncs,
                "losses": trainer._result.losses[-3:], **summarise_counts(counts)}
        summary[entry] = head
        text = [json.dumps(head, indent=1), "", *tables,
                "== one step's aten ops by input dtypes (calls)",
                *[f"{n:6d}  {k}" for k, n in counts.items()]]
        path = out_dir / f"profile_{args.variant}_{entry}_b{args.batch_size}.txt"
        path.write_text("\n".join(text) + "\n")
        print(json.dumps(head), flush=True)
        trainer = model = bb = None  # free the GPU memory before the next entry
        if cuda:
            torch.cuda.empty_cache()
        summary_file = out_dir / f"profile_{args.variant}_b{args.batch_size}_summary.json"  # merged across calls
        before = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        summary_file.write_text(json.dumps({**before, **summary}, indent=1))


if __name__ == "__main__":
    main()
