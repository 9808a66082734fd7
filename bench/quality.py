"""PAC against LoRA (and full fine-tuning where it fits) on every bundled GLUE task, at the same budget.

Tasks: SST-2, CoLA, MRPC, RTE, STS-B, and user-file tasks (`file:rte`): a bundled task written out as a train
and a dev .jsonl file *of the same name in two folders* and read back through `--task FILE --dev-file FILE`,
the code path a user's own data takes. Every (backbone, task, method, train seed) is one run of
`bench/pac_vs_baselines.py` (its run functions train and score; nothing is trained here), `--jobs` of them at
a time, each in its own process. The report gives, per backbone and task, each method's mean and standard
deviation over the train seeds (same samples, other initialisation and batch order), PAC's gap to LoRA in
points, and whether PAC is within the acceptance tolerance: max(2 points, LoRA's own seed std).

Scoring: `--holdout N` scores on N held-out TRAINING rows (tuning; never dev); without it, on dev.

  python bench/quality.py --models minilm-l6,smollm2-135m --jobs 8 --out bench/results/quality/quality.json
  python bench/quality.py --holdout 500 --sweep configs.json --out sweep.json    (PAC configurations, tuning)
  python bench/quality.py --pick sweep.json --pick-out chosen.json             (the selection rule, runs nothing)
  edgeft bench quality --models minilm-l6 --tasks sst2,rte --seeds 0 --jobs 2   (the same, through the CLI)
  edgeft bench quality --models minilm-l6 --user-task mine=train.jsonl --holdout 200   (PAC vs LoRA on your files)

Timings in a report come from runs that shared the machine with `--jobs - 1` others: indicative only; the
speed ratios are measured by pac_vs_baselines alone on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "pac_vs_baselines.py"
TASKS = ("sst2", "cola", "mrpc", "rte", "stsb", "file:rte")
METHOD_VARIANT = {"lora": "lora", "pac": "pac_cache", "full": "full"}
BASE = "base"  # the sweep's label for PAC's current defaults


class Once(argparse.Action):
    """An option that names one configuration: given twice, argparse would keep the last one silently (a run
    meant to compare two --pac-config files then runs one of them), so it is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest) is not None:
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)}, {values}): one run takes one; "
                         "to compare configurations, list them in a --sweep file")
        setattr(namespace, self.dest, values)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="minilm-l6,smollm2-135m")
    p.add_argument("--tasks", default=None, help="bundled tasks and file:<bundled task> user-file tasks (default: "
                                                  f"{','.join(TASKS)}; with --user-task: only the user's tasks)")
    p.add_argument("--user-task", action="append", default=[], metavar="NAME=TRAIN[,DEV]",
                   help="your own task from files (.jsonl/.csv/.tsv with text and label columns, as finetune reads "
                        "them), repeatable; reported as user:NAME. Without DEV, score it with --holdout N")
    p.add_argument("--user-text2-column", default=None,
                   help="with --user-task: the second text column of a pair task (as finetune --text2-column)")
    p.add_argument("--seeds", default="0,1,2", help="train seeds (the samples stay on --seed)")
    p.add_argument("--methods", default="lora,pac,full")
    p.add_argument("--full-models", default="minilm-l6", help="backbones on which full fine-tuning also runs")
    p.add_argument("--train-samples", type=int, default=1000)
    p.add_argument("--dev-samples", type=int, default=500)
    p.add_argument("--holdout", type=int, default=None, help="score on N held-out TRAINING rows (tuning), not dev")
    p.add_argument("--holdout-min-words", type=int, default=None,
                   help="with --holdout: draw the held-out rows from rows of at least this many words only")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--pac-epochs", type=int, default=None,
                   help="PAC's epochs (default: PAC's own for the backbone: 10 on a causal LM, else --epochs)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="which training rows (and held-out rows) are used")
    p.add_argument("--lr", action="append", default=[], help="METHOD=LR, passed on (repeatable)")
    p.add_argument("--pac-option", action="append", default=[], help="PAC option KEY=VALUE (repeatable)")
    p.add_argument("--lora-option", action="append", default=[],
                   help="LoRA option KEY=VALUE (repeatable), e.g. 'layers=[20, 21]' for LoRA on those blocks only")
    p.add_argument("--pac-config", default=None, action=Once,
                   help="JSON {options, lr?, epochs?, head?} (e.g. --pick's output): PAC's configuration for this "
                        "run")
    p.add_argument("--sweep", default=None, action=Once,
                   help="JSON list of {label, options, lr?, epochs?, head?}: PAC configurations to score (PAC only; "
                        "use with --holdout)")
    p.add_argument("--share-fill", action="store_true",
                   help="with --sweep: each (task, seed) process fills PAC's activation cache once, on disk in its "
                        "work folder, and every configuration with the same cache key trains on it (one with other "
                        "taps, or on copied blocks another side depth, refills it); the folder is deleted when the "
                        "process ends. The same metrics as refilling per configuration (test; checked on CPU)")
    p.add_argument("--pick", default=None, help="a --sweep report: apply the selection rule and print the choice")
    p.add_argument("--pick-out", default=None, help="with --pick: write the chosen configuration here (JSON)")
    p.add_argument("--margin", type=float, default=0.5,
                   help="--pick: points by which a configuration must beat 'base' to replace the defaults")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    p.add_argument("--device", default="auto")
    p.add_argument("--deterministic", action="store_true", help="torch's deterministic kernels in every run")
    p.add_argument("--work", default=None, help="folder for the per-run reports and the user files "
                                                "(default: <out stem>_runs next to --out)")
    p.add_argument("--out", default="bench/results/quality/quality.json")
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    args.user_files = _user_tasks(p, args)
    if args.tasks is None:
        args.tasks = ",".join(TASKS) if not args.user_files else ""
    args.tasks = ",".join(_csv(args.tasks) + list(args.user_files))
    if args.share_fill and not args.sweep:
        p.error("--share-fill shares PAC's cache fill between the configurations of a --sweep; give --sweep too")
    if not args.pick:
        _check_lists(p, args)
    return args


def _check_lists(p: argparse.ArgumentParser, args) -> None:
    """The suite's lists and files, checked before any run: a seed that is not a number or a method not in
    METHOD_VARIANT stopped it with a traceback, a misspelt task failed every run of it one by one, an empty list
    wrote an empty report, a --lr METHOD typo was dropped silently, and an --out folder was found only after every
    run, losing them."""
    from edgeft.data import TASK_NAMES

    for flag, value in (("--models", args.models), ("--seeds", args.seeds), ("--methods", args.methods)):
        if not _csv(value):
            p.error(f"{flag} {value!r} names nothing: give a comma-separated list")
    bad = [s for s in _csv(args.seeds) if not re.fullmatch(r"-?\d+", s)]
    if bad:
        p.error(f"--seeds {args.seeds!r}: {', '.join(bad)} not a whole number; write e.g. --seeds 0,1,2")
    bad = [m for m in _csv(args.methods) if m not in METHOD_VARIANT]
    if bad:
        p.error(f"--methods {args.methods!r}: unknown {', '.join(bad)}; choose from {', '.join(METHOD_VARIANT)}")
    if not _csv(args.tasks):
        p.error("--tasks names no task: give bundled tasks (e.g. sst2,rte) or --user-task NAME=TRAIN[,DEV]")
    for t in _csv(args.tasks):
        known = t in args.user_files or t.removeprefix("file:") in TASK_NAMES or (Path(t).suffix and Path(t).is_file())
        if not known:
            p.error(f"--tasks: unknown task {t!r}; choose from {', '.join(TASK_NAMES)}, file:<one of them>, or give "
                    "your own file with --user-task NAME=TRAIN[,DEV]")
    for name, least in (("train_samples", 1), ("dev_samples", 1), ("holdout", 1), ("holdout_min_words", 1),
                        ("epochs", 1), ("pac_epochs", 1), ("batch_size", 1), ("max_length", 8), ("threads", 1)):
        value = getattr(args, name)  # a 0 failed every run one by one, or (--holdout 0) scored on dev silently
        if value is not None and value < least:
            p.error(f"--{name.replace('_', '-')} {value}: must be at least {least}")
    bench = _baselines()
    bench.check_pairs(p.error, args.lr, args.pac_option, args.lora_option)
    bench.check_out(p.error, Path(args.out))


def _baselines():
    """bench/pac_vs_baselines.py as a module (its runs train and score; its plotting helpers are shared)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgeft_bench_pac_vs_baselines", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# -- user-file tasks ---------------------------------------------------------------------------------------
def _user_tasks(p: argparse.ArgumentParser, args) -> dict:
    """{"user:NAME": (train, dev or None, text2 column or None)} from --user-task NAME=TRAIN[,DEV]."""
    out = {}
    for spec in args.user_task:
        name, _, files = spec.partition("=")
        paths = [f for f in files.split(",") if f]
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not 1 <= len(paths) <= 2:
            p.error(f"--user-task {spec!r}: write NAME=TRAIN or NAME=TRAIN,DEV (NAME of letters, digits, _ . -)")
        for f in paths:
            if not Path(f).is_file():
                p.error(f"--user-task {name}: no file {f}")
        if len(paths) == 1 and not args.holdout:
            p.error(f"--user-task {name} has no dev file: give NAME=TRAIN,DEV, or score on held-out training rows "
                    "with --holdout N")
        if f"user:{name}" in out:
            p.error(f"--user-task {name} given twice")
        out[f"user:{name}"] = (str(Path(paths[0]).resolve()),
                               str(Path(paths[1]).resolve()) if len(paths) == 2 else None, args.user_text2_column)
    return out


def write_user_files(task: str, folder: Path) -> tuple[str, str, bool]:
    """The bundled task's train and dev splits as <folder>/train/<task>.jsonl and <folder>/dev/<task>.jsonl
    (same file name: their sample ids must still differ), labels by name, as a user would write them; and
    whether the rows are pairs (a `text2` column, which the user then names: --text2-column text2)."""
    from edgeft.data import load_task

    bundled = load_task(task)
    paths = []
    for split, rows in (("train", bundled.train), ("dev", bundled.dev)):
        path = folder / split / f"{task}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for ex in rows:
                row = {"text": ex["text"], **({"text2": ex["text2"]} if "text2" in ex else {})}
                row["label"] = bundled.label_names[ex["label"]] if bundled.label_names else ex["label"]
                f.write(json.dumps(row) + "\n")
        paths.append(str(path))
    return paths[0], paths[1], bundled.is_pair


# -- runs --------------------------------------------------------------------------------------------------
# what a --pac-config (a --pick output) may set beside the rule's own record; anything else is refused, not dropped
PAC_CONFIG_KEYS = {"options", "lr", "epochs", "weight_decay", "head", "label"}
PICK_RECORD_KEYS = {"rule", "margin_points", "cells", "scores", "best", "chosen"}


def pac_config(args) -> dict:
    cfg = json.loads(Path(args.pac_config).read_text()) if args.pac_config else {}
    unknown = sorted(set(cfg) - PAC_CONFIG_KEYS - PICK_RECORD_KEYS)
    if unknown:
        raise SystemExit(f"{args.pac_config}: keys {unknown} are not PAC configuration keys "
                         f"({', '.join(sorted(PAC_CONFIG_KEYS))}); a run must not silently leave them out")
    return {"options": cfg.get("options", {}), "lr": cfg.get("lr"), "epochs": cfg.get("epochs"),
            "weight_decay": cfg.get("weight_decay"), "head": cfg.get("head"), "label": cfg.get("label")}


def log_tail(path: str, lines: int = 15) -> str:
    """The end of a failed run's log, kept in the report: the work folder may be gone (a device machine)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(log not readable: {err})"


def pac_epochs(args, pac: dict, model: str | None = None) -> int:
    """PAC's epochs on `model`: the configuration's (--pac-config), else --pac-epochs, else PAC's own default for
    the backbone's family (its budget for `edgeft finetune` without --epochs, when set), else the suite's
    --epochs. A model that is not a bundled alias has no known family here (PAC's family-free default)."""
    from edgeft.methods import METHODS
    from edgeft.models import SOURCES

    family = SOURCES[model].family if model in SOURCES else None
    return pac["epochs"] or args.pac_epochs or METHODS["pac"].default_epochs_for(family) or args.epochs


def plan_runs(args, work: Path) -> list[dict]:
    """One entry per (backbone, task, method, train seed): the pac_vs_baselines command and where it reports."""
    files = {}
    for t in _csv(args.tasks):
        if t.startswith("file:"):
            train, dev, pair = write_user_files(t[5:], work / "userdata")
            files[t] = (train, dev, "text2" if pair else None)
    files.update(args.user_files)  # --user-task files (parse_args)
    pac = pac_config(args)
    runs = []
    for model in _csv(args.models):
        for task in _csv(args.tasks):
            methods = ["pac"] if args.sweep else [m for m in _csv(args.methods)
                                                  if m != "full" or model in _csv(args.full_models)]
            for method in methods:
                for seed in (int(s) for s in _csv(args.seeds)):
                    name = f"{Path(model).name}__{task.replace(':', '-')}__{method}__s{seed}"
                    epochs = args.epochs
                    words = ["--model", model, "--train-samples", str(args.train_samples), "--batch-size",
                             str(args.batch_size), "--max-length", str(args.max_length), "--seed", str(args.seed),
                             "--train-seed", str(seed), "--eval", "last", "--device", args.device, "--in-process",
                             "--out", str(work / f"{name}.json"), "--label", f"quality suite: {name}"]
                    if task in files:
                        train, dev, text2 = files[task]
                        words += ["--task", train] + (["--dev-file", dev] if dev else [])
                        if text2:  # a pair file: read both texts, as finetune --text2-column does
                            words += ["--text2-column", text2]
                    else:
                        words += ["--task", task]
                    words += ["--holdout", str(args.holdout)] if args.holdout else \
                        ["--dev-samples", str(args.dev_samples)]
                    if args.holdout and args.holdout_min_words:
                        words += ["--holdout-min-words", str(args.holdout_min_words)]
                    if args.threads:
                        words += ["--threads", str(args.threads)]
                    if args.deterministic:
                        words += ["--deterministic"]
                    for v in args.lr:
                        words += ["--lr", v]
                    if method == "lora":
                        for v in args.lora_option:
                            words += ["--lora-option", v]
                    if method == "pac":
                        for v in args.pac_option + [f"{k}={json.dumps(v)}" for k, v in pac["options"].items()]:
                            words += ["--pac-option", v]
                        if pac["lr"]:
                            words += ["--lr", f"pac={pac['lr']}"]
                        if pac["weight_decay"] is not None:
                            words += ["--weight-decay", str(pac["weight_decay"])]
                        if pac["head"]:  # the backbone's head, as `edgeft finetune --head`
                            words += ["--head", pac["head"]]
                        epochs = pac_epochs(args, pac, model)
                    fill_dir = None
                    if args.sweep:
                        words += ["--variants", "", "--sweep", str(Path(args.sweep).resolve())]
                        if args.share_fill:
                            fill_dir = str(work / f"{name}.fill")
                            for v in ('cache="disk"', f"cache_dir={json.dumps(fill_dir)}", 'on_stale="rebuild"'):
                                words += ["--pac-option", v]
                    else:
                        words += ["--variants", METHOD_VARIANT[method]]
                    words += ["--epochs", str(epochs)]
                    runs.append({"name": name, "model": model, "task": task, "method": method, "seed": seed,
                                 "argv": words, "report": str(work / f"{name}.json"), "log": str(work / f"{name}.log"),
                                 "fill_dir": fill_dir})
    # the slowest first (SmolLM2 LoRA), so the pool does not end on one long run
    weight = {"lora": 3, "full": 3, "pac": 1}
    return sorted(runs, key=lambda r: -(weight[r["method"]] * (4 if "smollm" in r["model"] else 1)))


def execute(runs: list[dict], jobs: int) -> list[dict]:
    def one(run):
        stamp = Path(run["report"]).with_suffix(".argv.json")  # the command that wrote the report
        if Path(run["report"]).exists() and stamp.exists() and json.loads(stamp.read_text()) == run["argv"]:
            return {**run, "rc": 0, "wall_s": 0.0, "reused": True}  # the same run, finished (a rerun after a stop)
        t0 = time.perf_counter()
        with open(run["log"], "w") as log:
            rc = subprocess.run([sys.executable, str(BENCH), *run["argv"]], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
        if run.get("fill_dir"):  # --share-fill: the cached activations served this process only
            shutil.rmtree(run["fill_dir"], ignore_errors=True)
        if rc == 0:  # a report from other settings (another PAC configuration, say) is never taken for this one
            stamp.write_text(json.dumps(run["argv"]))
        wall = time.perf_counter() - t0
        print(f"  {run['name']}: {'ok' if rc == 0 else f'FAILED ({rc}), see ' + run['log']} {wall:.0f}s", flush=True)
        return {**run, "rc": rc, "wall_s": wall}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, runs))


# -- tables -----------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def collect(done: list[dict]) -> dict:
    """{model: {task: {entry: [one record per seed]}}}; entry = method, or pac:<label> for sweep entries."""
    out: dict = {}
    for run in done:
        if run["rc"] != 0 or not Path(run["report"]).exists():
            continue
        report = json.loads(Path(run["report"]).read_text())
        for variant, res in report["variants"].items():
            entry = run["method"] if ":" not in variant else "pac:" + variant.split(":", 1)[1]
            out.setdefault(run["model"], {}).setdefault(run["task"], {}).setdefault(entry, []).append({
                "seed": run["seed"], "metric": res["dev_metric"], "metric_name": res["dev_metric_name"],
                "train_time_s": res["train_time_s"], "epochs": len(res["epoch_times_s"]), "lr": res["lr"],
                "final_train_loss": res["final_train_loss"], "options": res["options"] if res["method"] == "pac" else None,
                "side_init": res.get("side_init"),
                "machine": report["meta"]["machine"].get("gpu") or report["meta"]["machine"]["platform"]})
    return out


def summarise(raw: dict) -> dict:
    table = {}
    for model, tasks in raw.items():
        for task, entries in tasks.items():
            row = {}
            for entry, recs in entries.items():
                vals = [r["metric"] for r in recs if r["metric"] is not None]
                if not vals:
                    continue
                mean, std = _mean_std(vals)
                row[entry] = {"mean": mean, "std": std, "n": len(vals), "metric_name": recs[0]["metric_name"],
                              "per_seed": {r["seed"]: r["metric"] for r in recs},
                              "train_time_s": statistics.fmean(r["train_time_s"] for r in recs),
                              "epochs": recs[0]["epochs"]}
            lora = row.get("lora")
            for entry, cell in row.items():
                if lora and entry != "lora":
                    cell["gap_to_lora_points"] = 100 * (cell["mean"] - lora["mean"])
                    cell["tolerance_points"] = max(2.0, 100 * lora["std"])
                    # rounded: 0.782 - 0.802 is -2.0000000000000018 in floats, and a gap of exactly the tolerance
                    # is within it
                    cell["within_tolerance"] = round(cell["gap_to_lora_points"], 9) >= -round(cell["tolerance_points"], 9)
            table.setdefault(model, {})[task] = row
    return table


def pick(sweep: dict, margin: float) -> dict:
    """The selection rule (docs/benchmarks_pac.md, "The quality suite"): for each PAC configuration the mean,
    over ALL (backbone, task) cells of the sweep, of its mean over train seeds of the held-out metric (x100);
    the highest wins, but replaces 'base' (the current defaults) only if it beats base by more than `margin`
    points. A configuration missing any cell is not eligible."""
    table = sweep["table"]
    cells = [(m, t) for m in table for t in table[m]]
    configs = sorted({e for m, t in cells for e in table[m][t] if e.startswith("pac:")})
    scores = {}
    for c in configs:
        if all(c in table[m][t] for m, t in cells):
            scores[c[4:]] = statistics.fmean(100 * table[m][t][c]["mean"] for m, t in cells)
    if not scores:
        raise SystemExit("no configuration has a result in every cell")
    best = max(scores, key=scores.get)
    base = scores.get(BASE)
    chosen = best if base is None or scores[best] > base + margin else BASE
    items = {i["label"]: i for i in sweep["meta"]["sweep_items"]}
    return {"rule": pick.__doc__.split("\n\n")[0] if pick.__doc__ else "", "margin_points": margin,
            "cells": [f"{m}/{t}" for m, t in cells], "scores": dict(sorted(scores.items(), key=lambda kv: -kv[1])),
            "best": best, "chosen": chosen, **{k: v for k, v in items[chosen].items() if k != "label"},
            "label": chosen}


def plot(report: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = report["table"]
    models = list(table)
    if not models:
        return out
    fig, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 4.2), squeeze=False)
    colors = {"lora": "#1f77b4", "pac": "#2ca02c", "full": "#7f7f7f"}
    for ax, model in zip(axes[0], models):
        tasks = list(table[model])
        entries = sorted({e for t in tasks for e in table[model][t]}, key=lambda e: (e != "lora", e))
        width = 0.8 / max(1, len(entries))
        for i, e in enumerate(entries):
            xs = [j + (i - (len(entries) - 1) / 2) * width for j in range(len(tasks))]
            means = [100 * table[model][t][e]["mean"] if e in table[model][t] else 0 for t in tasks]
            stds = [100 * table[model][t][e]["std"] if e in table[model][t] else 0 for t in tasks]
            ax.bar(xs, means, width, yerr=stds, capsize=2, label=e, color=colors.get(e))
            if e != "lora":
                for x, t in zip(xs, tasks):
                    gap = table[model][t].get(e, {}).get("gap_to_lora_points")
                    if gap is not None:
                        ax.text(x, 1, f"{gap:+.1f}", ha="center", va="bottom", fontsize=7, rotation=90)
        names = [f"{t}\n{table[model][t][entries[0]]['metric_name']}" if entries[0] in table[model][t] else t
                 for t in tasks]
        ax.set_xticks(range(len(tasks)), names, fontsize=8)
        ax.set_ylabel(f"{report['meta']['scored_on']} metric x100\n(mean ± std over seeds)")
        ax.set_title(model)
        ax.legend(fontsize=8)
    m = report["meta"]
    pe = m["pac_epochs"]  # one number (older reports) or one per backbone
    pe = ", ".join(f"{k} {v}" for k, v in pe.items()) if isinstance(pe, dict) else pe
    return _baselines().save_figure(
        fig, f"PAC vs LoRA · {m['train_samples']} training rows · {m['epochs']} epochs (PAC {pe}) · "
             f"batch {m['batch_size']} · seeds {m['seeds']} · numbers: PAC's gap to LoRA (points)", out)


def print_table(table: dict) -> None:
    for model, tasks in table.items():
        for task, row in tasks.items():
            cells = [f"{e} {100 * c['mean']:.1f}±{100 * c['std']:.1f}"
                     + (f" ({c['gap_to_lora_points']:+.1f})" if "gap_to_lora_points" in c else "")
                     for e, c in sorted(row.items(), key=lambda kv: (kv[0] != "lora", kv[0]))]
            print(f"{model:14s} {task:9s} " + " | ".join(cells), flush=True)


def run(args) -> dict:
    for flag, path in (("--sweep", args.sweep), ("--pac-config", args.pac_config)):
        if path and not Path(path).is_file():  # a missing --sweep was found only after every run had failed
            raise SystemExit(f"{flag} {path}: no such file")
    if args.sweep:
        _baselines().read_sweep(args.sweep)  # each run reads it: a bad item would fail or mislabel every run
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_name(out.stem + "_runs")
    work.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(args, work)
    print(f"{len(runs)} runs, {args.jobs} at a time; reports in {work}", flush=True)
    t0 = time.perf_counter()
    done = execute(runs, args.jobs)
    raw = collect(done)
    table = summarise(raw)
    pac = pac_config(args)
    report = {
        "meta": {"date": dt.date.today().isoformat(), "models": _csv(args.models), "tasks": _csv(args.tasks),
                 "seeds": [int(s) for s in _csv(args.seeds)], "sample_seed": args.seed,
                 "train_samples": args.train_samples,
                 "scored_on": (f"{args.holdout} held-out training rows"
                               + (f" of at least {args.holdout_min_words} words" if args.holdout_min_words else "")
                               if args.holdout else f"dev (at most {args.dev_samples} rows)"),
                 "epochs": args.epochs, "pac_epochs": {m: pac_epochs(args, pac, m) for m in _csv(args.models)},
                 "batch_size": args.batch_size, "max_length": args.max_length, "jobs": args.jobs,
                 "share_fill": args.share_fill,
                 "pac_config": pac, "pac_options": args.pac_option, "lora_options": args.lora_option,
                 "lr": args.lr,
                 "sweep_items": json.loads(Path(args.sweep).read_text()) if args.sweep else None,
                 "failed": [r["name"] for r in done if r["rc"] != 0],
                 "failed_log_tails": {r["name"]: log_tail(r["log"]) for r in done if r["rc"] != 0},
                 "wall_s": time.perf_counter() - t0,
                 "label": args.label, "command": "python bench/quality.py " + " ".join(sys.argv[1:]),
                 "timing_note": f"runs shared the machine {args.jobs} at a time: times are indicative only"},
        "table": table,
        "runs": raw,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot(report, out.with_suffix(".png"))
    print_table(table)
    if report["meta"]["failed"]:
        print(f"FAILED runs: {report['meta']['failed']}", flush=True)
    print(f"wrote {out} and {out.with_suffix('.png')}", flush=True)
    return report


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.pick:
        try:
            report = json.loads(Path(args.pick).read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(f"--pick {args.pick}: not a readable --sweep report ({err})") from None
        if not isinstance(report, dict) or not (report.get("meta") or {}).get("sweep_items") or "table" not in report:
            raise SystemExit(f"--pick {args.pick}: not a --sweep report (no sweep_items): pick chooses among the "
                             "PAC configurations of a `--sweep FILE` run's report")
        choice = pick(report, args.margin)
        if args.pick_out:  # the file first: a closed pipe on stdout (`| head`) must not lose the choice
            Path(args.pick_out).write_text(json.dumps(choice, indent=2))
        print(json.dumps(choice, indent=2))
        return
    run(args)


if __name__ == "__main__":
    main()
