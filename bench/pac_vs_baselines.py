"""PAC against full fine-tuning and LoRA on one device: same backbone, task, samples, epochs, batch size, seed.

Variants: full, lora, pac_nocache (parallel adapters, backbone run every step), pac_cache (the same
adapters fed from the activation cache after epoch 1). Each variant runs in a fresh Python process so
that peak memory belongs to it alone. Records per-epoch wall time, end-to-end training time, peak
memory (per epoch and over the run), trainable parameters, cache size, backbone calls per epoch and
the dev metric into JSON, with a PNG beside it.

What the numbers mean
- epoch time: the trainer's wall time of one pass over the training set (a CUDA sync before each
  clock read); it excludes dev evaluation. End-to-end training time = the sum over epochs.
- peak memory: on CUDA the allocator's peak (torch.cuda.max_memory_allocated); on CPU the process's
  peak RSS (VmHWM, reset through /proc/self/clear_refs at the start of each epoch). It is measured per
  epoch, excluding evaluation; the run's peak is the largest epoch peak. Both include the backbone's
  weights when they are resident; "above baseline" subtracts what was resident before training began.

  python bench/pac_vs_baselines.py --model smollm2-135m --task sst2 --train-samples 4000 --epochs 5
  edgeft bench pac --model minilm-l6 --train-samples 500 --epochs 5        (the same, through the CLI)
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("full", "lora", "pac_nocache", "pac_cache")
DEFAULT_LRS = {"full": 2e-5, "lora": 5e-4, "pac": None}  # pac: the method's own default for the backbone (PAC.lr_for)
# Llama-architecture shapes for timing-only runs with random weights (timing does not depend on weight values).
RANDOM_LLAMAS = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2),  # tests
    "smollm2-135m-shape": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                               num_key_value_heads=3),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="alias, local folder or hub id")
    p.add_argument("--random-llama", choices=sorted(RANDOM_LLAMAS), default=None,
                   help="timing only: a Llama built from a config with random weights (uses --model's tokenizer)")
    p.add_argument("--task", default="sst2", help="a bundled task, or a user's .jsonl/.csv/.tsv file (as --data-file)")
    p.add_argument("--dev-file", default=None, help="with a file --task: the user's dev file (as finetune --dev-file)")
    p.add_argument("--head", default="auto", choices=["auto", "lm", "classifier"],
                   help="the backbone's head, as `edgeft finetune --head` (auto: LM head on a causal LM's "
                        "classification, a trained classifier for encoders and regression)")
    p.add_argument("--text2-column", default=None,
                   help="with a file --task: the second text column of a pair task (as finetune --text2-column)")
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument("--dev-samples", type=int, default=None, help="default: the whole dev split")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-seed", type=int, default=None,
                   help="seed of the trainable weights' initialisation and the batch order only (default: --seed); "
                        "the samples, the held-out split and random backbones stay on --seed")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--lr", action="append", default=[], help="METHOD=LR (full, lora, pac), repeatable")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's weight decay for every variant")
    p.add_argument("--pac-option", action="append", default=[], help="PAC option KEY=VALUE, repeatable")
    p.add_argument("--lora-option", action="append", default=[], help="LoRA option KEY=VALUE, repeatable")
    p.add_argument("--taps", default=None, help="PAC tap set: all, every:K, or i,j,k (same as --pac-option taps=)")
    p.add_argument("--eval", choices=["last", "each", "none"], default="last", help="dev evaluation after which epochs")
    p.add_argument("--holdout", type=int, default=None,
                   help="score on N held-out TRAINING examples instead of dev (for tuning without touching dev)")
    p.add_argument("--holdout-beyond", type=int, default=None,
                   help="draw the held-out examples from outside the first N training samples (default: this run's "
                        "--train-samples), so runs of different sizes score on the same rows")
    p.add_argument("--holdout-min-words", type=int, default=None,
                   help="draw the held-out examples only from rows of at least this many words (text and text2): "
                        "a validation split as long as the sentences a model meets after training on short rows")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "tf32", "bf16", "fp16"],
                   help="training precision (auto: fp32; edgeft.train.precision says why)")
    p.add_argument("--frozen-cast", default=None, choices=["linear", "all"],
                   help="under bf16/fp16 on CUDA, which frozen weights are stored in the compute dtype "
                        "(default: edgeft.train.precision.FROZEN_CAST)")
    p.add_argument("--compile", default="off", choices=["off", "default", "reduce-overhead"],
                   help="torch.compile the training step of the non-PAC variants (full, lora); PAC keeps its own "
                        "fast path (edgeft.train.compiled). Compile time is part of epoch 1 (and reported apart)")
    p.add_argument("--compile-bucket", type=int, default=16,
                   help="with --compile: pad batches to a multiple of this many tokens (>= --max-length: one width)")
    p.add_argument("--profile-epoch", type=int, default=None,
                   help="run epoch K under torch.profiler and write its top ops (host and device time) next to --out; "
                        "that epoch's time then includes the profiler's overhead, so it is not a timing")
    p.add_argument("--out", default="bench/results/pac/pac_vs_baselines.json")
    p.add_argument("--label", default="", help="free text stored with the results (machine, purpose)")
    p.add_argument("--sweep", default=None,
                   help="JSON file: a list of {label, options, lr?}; each runs pac_cache with those PAC options "
                        "(in this process, after --variants) - for tuning with --holdout")
    p.add_argument("--merge", nargs="+", default=None, metavar="REPORT[:SUFFIX[:VARIANTS]]",
                   help="combine variants of earlier reports (all, or the comma-separated VARIANTS; renamed "
                        "NAME@SUFFIX where a suffix is given) into --out, with its summary and plot; runs nothing")
    p.add_argument("--in-process", action="store_true", help="run variants in this process (tests; memory mixes)")
    p.add_argument("--no-collect", action="store_true",
                   help="in-process runs (--in-process, --sweep): do not run Python's cycle collector before each "
                        "(by default it runs, so that no earlier run's model, held by a reference cycle, is still "
                        "alive with its device memory when the next starts; h25 in bench/results/h25_device)")
    p.add_argument("--deterministic", action="store_true",
                   help="torch's deterministic kernels in every variant (TrainConfig.deterministic)")
    p.add_argument("--keep-losses", action="store_true",
                   help="report every step's training loss (to find where two runs part, h23)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    bad = [v for v in args.variants.split(",") if v and v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
    if not any(args.variants.split(",")) and not (args.sweep or args.merge or args.worker):
        p.error(f"--variants {args.variants!r} names no variant: choose from {', '.join(VARIANTS)}")
    # Counts checked here: each worker met a 0 as a pydantic traceback, and --dev-samples 0 or --holdout 0 did not
    # reach the workers at all (sys_argv_of drops a 0), which then scored on the whole dev split without a word.
    for name, least in (("train_samples", 1), ("dev_samples", 1), ("epochs", 1), ("batch_size", 1),
                        ("eval_batch_size", 1), ("max_length", 8), ("holdout", 1), ("holdout_beyond", 1),
                        ("holdout_min_words", 1), ("threads", 1), ("compile_bucket", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            p.error(f"--{name.replace('_', '-')} {value}: must be at least {least}")
    check_pairs(p.error, args.lr, args.pac_option, args.lora_option)
    if not args.worker:
        check_out(p.error, Path(args.out))
    if args.profile_epoch is not None and not 1 <= args.profile_epoch <= args.epochs:
        p.error(f"--profile-epoch {args.profile_epoch}: choose an epoch of this run, 1 to --epochs ({args.epochs})")
    return args


def _kv(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"expected KEY=VALUE, got '{pair}'")
        k, v = pair.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def check_pairs(error, lrs: list[str], pac_options: list[str] = (), lora_options: list[str] = ()) -> None:
    """--lr METHOD=LR and the KEY=VALUE options, checked before any variant runs: a METHOD that is not one of
    DEFAULT_LRS's (`--lr lroa=1e-3`, `--lr pac_cache=...`) was dropped silently, and a value that is not a number
    or a pair without '=' stopped each variant's process with a traceback."""
    for flag, pairs in (("--lr", lrs), ("--pac-option", pac_options), ("--lora-option", lora_options)):
        for pair in pairs:
            if "=" not in pair:
                error(f"{flag} {pair!r}: write {'METHOD=LR' if flag == '--lr' else 'KEY=VALUE'}")
    for pair in lrs:
        method, value = (t.strip() for t in pair.split("=", 1))
        if method not in DEFAULT_LRS:
            error(f"--lr {pair!r}: {method!r} is not a method here; choose from {', '.join(DEFAULT_LRS)} "
                  "(pac sets both pac_nocache and pac_cache)")
        try:
            lr = float(value)
        except ValueError:
            lr = None
        if lr is None or not lr > 0 or lr == float("inf"):
            error(f"--lr {pair!r}: the learning rate must be a positive number, e.g. {method}=5e-4")


SWEEP_KEYS = ("label", "options", "lr", "train_seed", "epochs", "weight_decay", "head")  # what run() reads


def read_sweep(path: str) -> list[dict]:
    """The --sweep file's configurations, checked before any run: a key run() does not read (a typo such as
    'option') was dropped, so the defaults ran under that label, and a label given twice kept only the last run."""
    try:
        items = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"--sweep {path}: not a readable JSON file ({err})") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise SystemExit(f"--sweep {path}: must be a JSON list of objects {{label, options, ...}}")
    for n, item in enumerate(items):
        unknown = sorted(set(item) - set(SWEEP_KEYS))
        if unknown:
            raise SystemExit(f"--sweep {path}: item {n} has keys {unknown}, which a sweep does not read (it reads "
                             f"{', '.join(SWEEP_KEYS)})")
        if not isinstance(item.get("label"), str) or not item["label"] or not isinstance(item.get("options", {}), dict):
            raise SystemExit(f"--sweep {path}: item {n} needs a 'label' (text) and 'options' as an object")
    labels = [i["label"] for i in items]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise SystemExit(f"--sweep {path}: labels {twice} given twice; each names one configuration's results")
    return items


def check_out(error, out: Path) -> None:
    """The report's path, writable before the runs: a folder or a file in the way was found only when the
    report was written, after every run, and the runs' results were lost."""
    if out.is_dir():
        error(f"--out {out}: a folder; give the report's file name, e.g. {out / 'report.json'}")
    in_the_way = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        error(f"--out {out}: {in_the_way} is a file, not a folder")


def method_of(variant: str, args) -> tuple[str, dict, float]:
    lrs = {**DEFAULT_LRS, **{k: float(v) for k, v in _kv(args.lr).items()}}
    if variant == "full":
        return "full", {}, lrs["full"]
    if variant == "lora":
        return "lora", _kv(args.lora_option), lrs["lora"]
    opts = _kv(args.pac_option)
    if args.taps:
        opts["taps"] = args.taps
    opts["cache"] = "off" if variant == "pac_nocache" else opts.get("cache", "memory")
    return "pac", opts, lrs["pac"]


# -- one variant (in a worker process) ----------------------------------------------------------------------
def random_backbone(size: str, tokenizer_from: str, seed: int, device):
    """A Llama of the given shape with random weights (timing only) and a real tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from edgeft.models.backbone import Backbone, arch_of, resolve

    path, _ = resolve(tokenizer_from)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      **RANDOM_LLAMAS[size])
    torch.manual_seed(seed)
    with torch.device(device):  # initialise where it runs: a 1B init on CPU alone takes minutes on few cores
        model = LlamaForCausalLM(cfg)
    model.eval()
    return Backbone(name=f"random-llama-{size}", path=f"random-llama-{size}-seed{seed}", model=model, tokenizer=tok,
                    arch=arch_of(cfg), head="causal_lm")


def words_in(example: dict) -> int:
    """Whitespace words of an example's input text(s)."""
    return len(str(example.get("text", "")).split()) + len(str(example.get("text2") or "").split())


def holdout_examples(task, args) -> list[dict]:
    """N training examples that are not among the ones trained on (seeded): a validation split for tuning."""
    import random

    from edgeft.data import TaskConfig, load_task

    whole = load_task(TaskConfig(name=args.task, max_length=args.max_length, seed=args.seed, dev_file=args.dev_file,
                                 text2_column=args.text2_column))
    beyond = max(args.holdout_beyond or 0, len(task.train))
    if beyond > len(task.train):  # the rows a larger run would train on (subsets by one seed are nested)
        task = load_task(TaskConfig(name=args.task, train_samples=beyond, max_length=args.max_length, seed=args.seed,
                                    dev_file=args.dev_file, text2_column=args.text2_column))
    used = {e["id"] for e in task.train}
    rest = [e for e in whole.train if e["id"] not in used]
    if args.holdout_min_words:
        rest = [e for e in rest if words_in(e) >= args.holdout_min_words]
    if len(rest) < args.holdout:
        raise SystemExit(f"--holdout {args.holdout}: only {len(rest)} training examples are left over"
                         f"{f' with at least {args.holdout_min_words} words' if args.holdout_min_words else ''}.")
    return random.Random(args.seed + 7919).sample(rest, args.holdout)


def run_variant(variant: str, args) -> dict:
    import torch

    here = str(Path(__file__).resolve().parent)  # bench/, also when bench/quality.py loads this file as a module
    if here not in sys.path:
        sys.path.insert(0, here)
    from epoch_profiler import EpochProfiler
    from edgeft.data import TaskConfig, load_task
    from edgeft.data.features import Featurizer, objective_for
    from edgeft.methods import get_method
    from edgeft.models import load_backbone
    from edgeft.train.evaluate import evaluate
    from edgeft.train.loop import Trainer, TrainConfig, resolve_device, seed_everything
    from edgeft.train.meters import PeakMemory, current_rss_mb, parameter_counts
    from edgeft.train import precision as precision_module
    from edgeft.train.precision import Precision
    from edgeft.train.recipe import head_for, make_loss_fn

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.frozen_cast:
        precision_module.FROZEN_CAST = args.frozen_cast
    train_seed = args.seed if args.train_seed is None else args.train_seed
    seed_everything(args.seed)
    t0 = time.perf_counter()
    task = load_task(TaskConfig(name=args.task, train_samples=args.train_samples, dev_samples=args.dev_samples,
                                max_length=args.max_length, seed=args.seed, dev_file=args.dev_file,
                                text2_column=args.text2_column))
    if args.holdout:
        task.dev = holdout_examples(task, args)
    if args.random_llama:
        backbone = random_backbone(args.random_llama, args.model, args.seed, device)
    else:
        head = head_for(args.model, task, args.head)
        backbone = load_backbone(args.model, head=head, num_labels=task.num_labels,
                                 problem_type="regression" if task.kind == "regression" else None)
    load_s = time.perf_counter() - t0
    objective = objective_for(task, backbone.head)
    featurizer = Featurizer(task, backbone.tokenizer, objective, args.max_length)
    train_feats, dev_feats = featurizer.encode(task.train), featurizer.encode(task.dev)
    method_name, options, lr = method_of(variant, args)
    method = get_method(method_name, options)
    seed_everything(train_seed)
    model = method.place(method.prepare(backbone, task), device)
    trainable, total = parameter_counts(model)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, lr=lr,
                      device=str(device), seed=train_seed, log_every=10**9, precision=args.precision,
                      compile="off" if method_name == "pac" else args.compile, compile_bucket=args.compile_bucket,
                      weight_decay=args.weight_decay, deterministic=args.deterministic)
    precision = Precision(args.precision, device)
    # One untimed forward through the model (and so the backbone) for every variant, so CUDA/cuBLAS start-up is
    # in nobody's epoch 1. No sample ids: PAC computes it without touching its cache.
    with torch.no_grad(), precision.autocast():
        warm = featurizer.collate(train_feats[:args.batch_size])
        model(input_ids=warm["input_ids"].to(device), attention_mask=warm["attention_mask"].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
        baseline_mb = torch.cuda.memory_allocated(device) / 2**20
    else:
        baseline_mb = current_rss_mb()

    meter = PeakMemory(device)
    epoch_peaks, evals, eval_times, calls, offloaded = [], [], [], [], []
    state = {"epoch": 0, "calls": getattr(model, "backbone_calls", 0)}  # the warm-up pass is nobody's epoch

    profiler = EpochProfiler(args.profile_epoch, Path(args.out).with_suffix(f".{variant}.profile.txt"), device)

    def eval_fn(m):
        state["epoch"] += 1
        profiler.at_epoch_end(state["epoch"])
        epoch_peaks.append(meter.peak_mb())
        now_calls = getattr(m, "backbone_calls", 0)
        calls.append(now_calls - state["calls"])
        offloaded.append(bool(getattr(m, "_offloaded", False)))
        metrics = {}
        if args.eval == "each" or (args.eval == "last" and state["epoch"] == args.epochs):
            te = time.perf_counter()
            metrics = evaluate(m, task, featurizer, dev_feats, args.eval_batch_size, device, 64)
            eval_times.append(time.perf_counter() - te)
            evals.append({"epoch": state["epoch"], **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        state["calls"] = getattr(m, "backbone_calls", 0)
        meter.start()  # the next epoch's peak starts here (evaluation excluded)
        return metrics

    trainer = Trainer(model, method, featurizer, train_feats, cfg, make_loss_fn(featurizer), eval_fn)
    meter.start()
    profiler.at_epoch_end(0)
    t_fit = time.perf_counter()
    result = trainer.fit()
    fit_s = time.perf_counter() - t_fit
    final = evals[-1] if evals else {}
    # every PAC option auto resolves, as this run built it (side_init, out_scale, side_attention, pair_encoding, ...)
    pac_spec = method.spec(model) if method_name == "pac" else None
    out = {
        "variant": variant, "method": method_name, "options": method.options.model_dump(), "lr": trainer.lr,
        "weight_decay": args.weight_decay,
        "deterministic": args.deterministic,
        # PAC's side_init as this run resolved it (the option may be auto) and why
        "side_init": pac_spec["side_init"] if pac_spec else None,
        "side_init_why": getattr(model, "side_init_why", None),
        "pac_spec": pac_spec,
        "precision": precision.name,
        "frozen_cast": getattr(trainer, "frozen_cast", None),  # tensors stored in the compute dtype (CUDA bf16/fp16)
        "frozen_cast_scope": precision_module.FROZEN_CAST,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "compile": result.compile,  # None: eager; else mode, shapes, compile_s, first_seen_steps_s (edgeft.train.compiled)
        "train_seed": train_seed,
        "epoch_times_s": result.epoch_times_s, "train_time_s": sum(result.epoch_times_s),
        "fit_wall_s_with_eval": fit_s, "eval_times_s": eval_times, "load_s": load_s,
        "epoch_peak_memory_mb": epoch_peaks, "peak_memory_mb": max(epoch_peaks),
        "peak_memory_after_epoch1_mb": max(epoch_peaks[1:]) if len(epoch_peaks) > 1 else None,
        "baseline_memory_mb": baseline_mb, "peak_above_baseline_mb": max(epoch_peaks) - baseline_mb,
        "memory_kind": meter.kind, "trainable_params": trainable, "total_params": total,
        "dev_metric_name": task.metric_name, "dev_metric": final.get(task.metric_name), "eval_history": evals,
        "final_train_loss": sum(result.losses[-20:]) / max(len(result.losses[-20:]), 1),
        "steps": result.steps, "train_examples": len(train_feats), "dev_examples": len(dev_feats),
    }
    if args.keep_losses:
        out["losses"] = result.losses
    if method_name == "pac":
        out["backbone_calls_per_epoch"] = calls  # training passes only (evaluation excluded)
        out["backbone_offloaded_at_epoch_end"] = offloaded
        out["taps"] = list(model.taps)
        out["fill"] = model.fill
        out["backbone_kept_on_host"] = model._host is not None
        if model._host is not None:
            out["backbone_bytes_lent_gb"] = model._host.bytes_lent / 1e9  # host -> GPU traffic, evaluation included
        out["positions"] = model.positions
        out["phase_s"] = dict(model.phase_s)  # fill, packing, channel statistics (before epoch 1's steps)
        out["fast_path"] = model.fast_path()  # device cache view and CUDA graphs of the cached epochs
        if model.cache is not None:
            out["cache"] = model.cache.describe()
            out["cache_mb"] = out["cache"]["megabytes"]
    return out


# -- the whole benchmark -------------------------------------------------------------------------------------
def machine(device_name: str) -> dict:
    import torch
    import transformers

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpus": os.cpu_count(), "device": device_name}
    if device_name.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return info


def summarise(results: dict) -> dict:
    s = {}
    lora, full, pac = results.get("lora"), results.get("full"), results.get("pac_cache")
    nocache = results.get("pac_nocache")
    if pac and lora:
        s["speedup_pac_cache_vs_lora"] = lora["train_time_s"] / pac["train_time_s"]
        s["memory_reduction_pac_cache_vs_lora"] = 1 - pac["peak_memory_mb"] / lora["peak_memory_mb"]
        if lora.get("dev_metric") is not None and pac.get("dev_metric") is not None:
            s["dev_metric_pac_minus_lora"] = pac["dev_metric"] - lora["dev_metric"]
    if pac and full:
        s["speedup_pac_cache_vs_full"] = full["train_time_s"] / pac["train_time_s"]
        s["memory_reduction_pac_cache_vs_full"] = 1 - pac["peak_memory_mb"] / full["peak_memory_mb"]
        if full.get("peak_memory_after_epoch1_mb") and pac.get("peak_memory_after_epoch1_mb"):
            s["memory_reduction_after_epoch1_pac_cache_vs_full"] = \
                1 - pac["peak_memory_after_epoch1_mb"] / full["peak_memory_after_epoch1_mb"]
        s["memory_reduction_above_baseline_pac_cache_vs_full"] = \
            1 - pac["peak_above_baseline_mb"] / max(full["peak_above_baseline_mb"], 1e-9)
    if pac and lora and lora.get("peak_memory_after_epoch1_mb") and pac.get("peak_memory_after_epoch1_mb"):
        s["memory_reduction_after_epoch1_pac_cache_vs_lora"] = \
            1 - pac["peak_memory_after_epoch1_mb"] / lora["peak_memory_after_epoch1_mb"]
        s["memory_reduction_above_baseline_pac_cache_vs_lora"] = \
            1 - pac["peak_above_baseline_mb"] / max(lora["peak_above_baseline_mb"], 1e-9)
    if pac and nocache:
        s["speedup_cache_vs_nocache"] = nocache["train_time_s"] / pac["train_time_s"]
    return s


def plot(report: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["variants"]
    names = list(res)
    base = {"full": "#7f7f7f", "lora": "#1f77b4", "pac_nocache": "#ff7f0e", "pac_cache": "#2ca02c"}
    light = {"full": "#c7c7c7", "lora": "#aec7e8", "pac_nocache": "#ffbb78", "pac_cache": "#98df8a"}
    colors = {n: (light if "@" in n else base).get(n.split("@")[0].split(":")[0], "#9467bd") for n in names}
    swept = [n for n in names if ":" in n]  # sweep entries: one colour each
    colors.update({n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(swept)})
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    ax = axes[0]
    for n in names:
        ax.plot(range(1, len(res[n]["epoch_times_s"]) + 1), res[n]["epoch_times_s"], marker="o", label=n,
                color=colors.get(n))
    ax.set(xlabel="epoch", ylabel="seconds", title="wall time per epoch")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    if not names:
        plt.close(fig)
        return out
    bars = [(axes[1], "train_time_s", "end-to-end training (s)"), (axes[2], "peak_memory_mb", "peak memory (MB)"),
            (axes[3], "dev_metric", f"{'held-out' if report['meta'].get('scored_on', '').startswith('1') or 'held-out' in report['meta'].get('scored_on', '') else 'dev'} "
                                    f"{next(iter(res.values()))['dev_metric_name']}")]
    for ax, key, title in bars:
        vals = [res[n].get(key) or 0 for n in names]
        ax.bar(names, vals, color=[colors.get(n) for n in names])
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    if "peak_memory_after_epoch1_mb" in res.get("pac_cache", {}):
        v = res["pac_cache"]["peak_memory_after_epoch1_mb"]
        if v:
            axes[2].scatter([names.index("pac_cache")], [v], marker="_", s=400, color="k",
                            label="epochs 2+ peak", zorder=3)
            axes[2].legend(fontsize=8)
    m = report["meta"]
    return save_figure(fig, f"{m['model']} on {m['task']} · {m['train_samples']} samples × {m['epochs']} epochs · "
                            f"batch {m['batch_size']} · {m['machine'].get('gpu') or 'CPU'}", out)


def save_figure(fig, title: str, out: Path) -> Path:
    """Title (wrapped to the figure's width), layout, PNG at 110 dpi, figure closed (the benchmark scripts' common
    last step)."""
    import textwrap

    import matplotlib.pyplot as plt

    fig.suptitle(textwrap.fill(title, width=max(40, int(12 * fig.get_figwidth()))), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run_in_process(variant: str, args) -> dict:
    """run_variant in this process, after freeing what earlier runs left in reference cycles (unless
    --no-collect). One such cycle is PyTorch's: a lazy import of torch._dynamo inside a run goes through
    torch.fx.wrap, whose frame holds itself, and so every frame above it (that run's model, trainer and device
    cache) until the collector runs."""
    if not args.no_collect:
        gc.collect()
    return run_variant(variant, args)


def run(args) -> dict:
    from rich.console import Console

    console = Console()
    variants = [v for v in args.variants.split(",") if v]
    sweep = read_sweep(args.sweep) if args.sweep else []  # before the variants: a bad file stops nothing long
    results = {}
    for v in variants:
        console.print(f"[bold]{v}[/] ...", highlight=False)
        t0 = time.perf_counter()
        if args.in_process:
            results[v] = run_in_process(v, args)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                res_file = Path(tmp) / "result.json"
                argv = [sys.executable, str(Path(__file__).resolve()), *sys_argv_of(args), "--worker", v,
                        "--worker-out", str(res_file)]
                proc = subprocess.run(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                if proc.returncode != 0 or not res_file.exists():
                    raise SystemExit(f"variant {v} failed (exit code {proc.returncode})")
                results[v] = json.loads(res_file.read_text())
        r = results[v]
        c = r.get("compile")
        compiled = f" · compile {c['compile_s'] or 0:.1f}s, new-shape steps {c['first_seen_steps_s']:.1f}s, " \
                   f"{len(c['shapes'])} shape(s)" if c else ""
        console.print(f"  {v}: train {r['train_time_s']:.1f}s (epochs {', '.join(f'{t:.1f}' for t in r['epoch_times_s'])})"
                      f" · peak {r['peak_memory_mb']:.0f} MB · dev {r['dev_metric_name']} {r['dev_metric']}{compiled}"
                      f" · {time.perf_counter() - t0:.0f}s total", highlight=False)
    if args.sweep:
        import copy

        for item in sweep:
            sub = copy.deepcopy(args)
            sub.pac_option = args.pac_option + [f"{k}={json.dumps(v)}" for k, v in item.get("options", {}).items()]
            if "lr" in item:
                sub.lr = args.lr + [f"pac={item['lr']}"]
            if "train_seed" in item:  # repeats of one configuration: same samples, other init and batch order
                sub.train_seed = item["train_seed"]
            if "epochs" in item:  # PAC's cached epochs are cheap: a configuration may spend more of them
                sub.epochs = item["epochs"]
            if "weight_decay" in item:
                sub.weight_decay = item["weight_decay"]
            if "head" in item:  # the backbone's head (e.g. a trained classifier on a causal LM, no verbalizer)
                sub.head = item["head"]
            name = f"pac_cache:{item['label']}"
            t0 = time.perf_counter()
            results[name] = r = run_in_process("pac_cache", sub)
            console.print(f"  {name}: train {r['train_time_s']:.1f}s · dev {r['dev_metric_name']} {r['dev_metric']}"
                          f" · loss {r['final_train_loss']:.4f} · {time.perf_counter() - t0:.0f}s", highlight=False)
    from edgeft.train.loop import resolve_device

    report = {
        "meta": {"date": dt.date.today().isoformat(), "model": args.random_llama and f"random-llama-{args.random_llama}"
                 or args.model, "random_weights": bool(args.random_llama), "task": args.task,
                 "train_samples": args.train_samples, "dev_samples": args.dev_samples, "epochs": args.epochs,
                 "scored_on": (f"{args.holdout} held-out training examples"
                               + (f" of at least {args.holdout_min_words} words" if args.holdout_min_words else "")
                               if args.holdout else "dev split"),
                 "batch_size": args.batch_size, "max_length": args.max_length, "seed": args.seed,
                 "precision": args.precision, "compile": args.compile, "compile_bucket": args.compile_bucket,
                 "train_seed": args.train_seed, "eval": args.eval,
                 "label": args.label, "command": "python bench/pac_vs_baselines.py " + " ".join(sys_argv_of(args)),
                 "machine": machine(str(resolve_device(args.device)))},
        "variants": results,
        "summary": summarise(results),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot(report, out.with_suffix(".png"))
    console.print(json.dumps(report["summary"], indent=2))
    console.print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


def sys_argv_of(args) -> list[str]:
    """The options of this run as command-line words (to start workers with)."""
    words = ["--model", args.model, "--task", args.task, "--train-samples", str(args.train_samples),
             "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--eval-batch-size",
             str(args.eval_batch_size), "--max-length", str(args.max_length), "--seed", str(args.seed),
             "--variants", args.variants, "--eval", args.eval, "--device", args.device, "--out", args.out]
    if args.precision != "auto":
        words += ["--precision", args.precision]
    if args.frozen_cast:
        words += ["--frozen-cast", args.frozen_cast]
    if args.head != "auto":
        words += ["--head", args.head]
    if args.compile != "off":
        words += ["--compile", args.compile, "--compile-bucket", str(args.compile_bucket)]
    if args.dev_samples:
        words += ["--dev-samples", str(args.dev_samples)]
    if args.dev_file:
        words += ["--dev-file", args.dev_file]
    if args.text2_column:
        words += ["--text2-column", args.text2_column]
    if args.holdout:
        words += ["--holdout", str(args.holdout)]
    if args.holdout_beyond:
        words += ["--holdout-beyond", str(args.holdout_beyond)]
    if args.holdout_min_words:
        words += ["--holdout-min-words", str(args.holdout_min_words)]
    if args.weight_decay:
        words += ["--weight-decay", str(args.weight_decay)]
    if args.train_seed is not None:
        words += ["--train-seed", str(args.train_seed)]
    if args.threads:
        words += ["--threads", str(args.threads)]
    if args.random_llama:
        words += ["--random-llama", args.random_llama]
    if args.taps:
        words += ["--taps", args.taps]
    if args.profile_epoch:
        words += ["--profile-epoch", str(args.profile_epoch)]
    if args.keep_losses:
        words += ["--keep-losses"]
    if args.deterministic:
        words += ["--deterministic"]
    for flag, values in (("--lr", args.lr), ("--pac-option", args.pac_option), ("--lora-option", args.lora_option)):
        for v in values:
            words += [flag, v]
    if args.label:
        words += ["--label", args.label]
    if args.sweep:
        words += ["--sweep", args.sweep]
    return words


def merge(args) -> dict:
    """One report from several (e.g. baselines from one run, a PAC design from another), runs nothing."""
    variants, sources, meta = {}, [], None
    for item in args.merge:
        path, suffix, wanted = (item.split(":") + ["", ""])[:3]
        report = json.loads(Path(path).read_text())
        meta = meta or dict(report["meta"])
        take = [v for v in report["variants"] if not wanted or v in wanted.split(",")]
        sources.append({"file": path, "suffix": suffix or None, "date": report["meta"]["date"],
                        "label": report["meta"].get("label"), "variants": take})
        for name, res in ((n, report["variants"][n]) for n in take):
            variants[f"{name}@{suffix}" if suffix else name] = {**res, "source": path}
    meta["merged_from"] = sources
    meta["label"] = args.label or meta.get("label", "")
    merged = {"meta": meta, "variants": variants, "summary": summarise(variants)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2))
    plot(merged, out.with_suffix(".png"))
    print(json.dumps(merged["summary"], indent=2))
    return merged


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.merge:
        merge(args)
        return
    from edgeft.quiet import quiet_libraries

    quiet_libraries()
    if args.worker:
        from edgeft.errors import EdgeftError

        try:
            result = run_variant(args.worker, args)
        except EdgeftError as err:  # a bad task, option or model: its message, not a traceback of this process
            raise SystemExit(f"error: {err}") from None
        Path(args.worker_out).write_text(json.dumps(result))
        return
    run(args)


if __name__ == "__main__":
    main()
