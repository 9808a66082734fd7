"""`edgeft compress`: open the model (+ merge the adapter), run one compression step with calibration data
from the task, store the result compactly, and measure it (size on disk, WikiText-2 perplexity, the
task metric, time) beside the figures of its input. Steps chain by passing the output folder as the
next input; the report carries the whole chain."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Literal, Optional

from pydantic import Field

from edgeft.compress.calibration import calibration_batches, count_tokens
from edgeft.compress.evaluation import check_scorable, task_metric, wikitext2_perplexity
from edgeft.compress.layerwise import block_linear_names
from edgeft.compress.modules import count_params, nonzero_weights
from edgeft.compress.step_records import StepRecord, write_report
from edgeft.compress.source import Source, open_model
from edgeft.compress.registry import StepContext, get_step
from edgeft.compress.store import check_out_parents, folder_bytes, is_compressed_folder, save_compressed
from edgeft.config import ConfigFile
from edgeft.data.tasks import task_label
from edgeft.errors import ConfigError, EdgeftError
from edgeft.models.backbone import resolve
from edgeft.paths import written_whole
from edgeft.train.rundir import MODEL_OWNED


class CompressConfig(ConfigFile):
    """Everything `edgeft compress` needs; the same keys work from a YAML file."""

    what: ClassVar[str] = "compress config"

    model: str = Field(description="alias, model folder or an earlier compress step's output folder: --model or "
                                   "'model:' in the config file")
    adapter: Optional[str] = None
    method: str = "gptq"
    options: dict = Field(default_factory=dict)
    out: str = "runs/compressed"
    # storage of tensors the step leaves dense (embeddings, norms, pruned layers)
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    calib_task: Optional[str] = None  # default: the adapter's task, else wikitext2
    calib_samples: int = Field(32, ge=1)
    calib_seq_len: int = Field(512, ge=8)
    seed: int = 0
    eval_wikitext_windows: int = Field(32, ge=0)  # 0: skip; each window is eval_seq_len tokens of the test text
    eval_seq_len: int = Field(512, ge=8)
    eval_task: Optional[str] = None  # default: the adapter's task ("none": skip)
    eval_task_samples: int = Field(200, ge=1)
    eval_before: bool = True

    @classmethod
    def prepare(cls, data: dict, source: str) -> dict:
        """The step's command-line flags (`bits: 4`, `pattern: 2:4`) may also sit at the top of a file, as the CLI
        writes them; they go into `options` (they were 'unknown key')."""
        flat = [k for k in STEP_FLAGS if k in data]
        if not flat:
            return data
        options = dict(data.get("options") or {}) if isinstance(data.get("options"), dict) else {}
        for key in flat:
            if key in options and options[key] != data[key]:
                raise ConfigError(f"{source}: {key} is given twice (at the top and under options) with different "
                                  "values; keep one")
            options[key] = data[key]
        return {**{k: v for k, v in data.items() if k not in flat}, "options": options}


STEP_FLAGS = ("bits", "group_size", "sparsity", "pattern", "ratio", "teacher", "teacher_adapter")  # --bits ...
config_from_dict = CompressConfig.from_dict


def claim_output(cfg: CompressConfig, overwrite: bool = False):
    """Refuse a non-empty `out` (or one that holds an input) unless `overwrite`. Returns the claimed RunDir, to hold in
    a `with` block while the step runs; the earlier output is replaced only once the new one is whole."""
    from edgeft.train.rundir import claim

    out = Path(cfg.out).resolve()
    for name, given in (("--model", cfg.model), ("--adapter", cfg.adapter)):
        if given and Path(given).exists() and out in (Path(given).resolve(), *Path(given).resolve().parents):
            raise ConfigError(f"{cfg.out}: the output folder holds the input ({name} {given}); write to another --out.")
    check_out_parents(cfg.out)
    return claim(cfg.out, overwrite=overwrite, owned=MODEL_OWNED, resume_flag=None)


def check_task(task: Optional[str], flag: str) -> None:
    """Read a --calib-task/--eval-task now (a few rows; bundled tasks take milliseconds): an unknown name or an
    unreadable file was refused only after the input was measured, or, for an earlier step's folder (not measured
    again), after the whole step had run and its result was thrown away."""
    if task and task != "none":
        from edgeft.data import load_task
        from edgeft.data.tasks import task_config

        try:
            load_task(task_config(task, train_samples=1, dev_samples=1))
        except EdgeftError as err:
            raise type(err)(f"{flag} {task}: {err}") from err


def _adapter_task(src: Source, log=print) -> Optional[str | dict]:
    """The task the adapter was trained on: a bundled task's name, or its own data file and how it was read
    (when that file is still where it was; else none, said in the log, and the defaults take over)."""
    note = src.manifest.source.get("adapter_note") or {}
    own = note.get("task_config")
    if own:
        if Path(own["data_file"]).is_file():
            return own
        log(f"the adapter's data file {own['data_file']} is gone: calibrating on wikitext2 and scoring no task metric "
            "(give --calib-task / --eval-task)")
        return None
    return note.get("task")


def _weights_bytes(model_arg: str, src: Source) -> int:
    """Size of the input's weight files: the model folder (+ adapter folder) or a compressed folder."""
    if is_compressed_folder(model_arg):
        return folder_bytes(model_arg)
    path, local = resolve(model_arg)
    size = folder_bytes(path) if local else 0
    adapter = src.manifest.source.get("adapter")
    return size + (folder_bytes(adapter) if adapter else 0)


def measure_units(src: Source, cfg: CompressConfig, eval_task: Optional[str]) -> int:
    """The steps `measure` reports to its progress bar: one per batch of 8 WikiText-2 windows (causal LMs), one
    for the task metric."""
    ppl = -(-cfg.eval_wikitext_windows // 8) if cfg.eval_wikitext_windows and src.backbone.head == "causal_lm" else 0
    return ppl + (1 if eval_task and eval_task != "none" and not (eval_task == "wikitext2" and ppl) else 0)


def measure(src: Source, cfg: CompressConfig, eval_task: Optional[str], progress=None) -> dict:
    model, tok = src.backbone.model, src.backbone.tokenizer
    out: dict = {}
    t0, c0 = time.perf_counter(), time.process_time()
    if cfg.eval_wikitext_windows and src.backbone.head == "causal_lm":
        out["wikitext2"] = wikitext2_perplexity(model, tok, cfg.eval_seq_len, cfg.eval_wikitext_windows,
                                                progress=progress)
    if eval_task == "wikitext2" and "wikitext2" in out:  # the same figure; do not compute it twice
        out["task"] = {"task": "wikitext2", "metric_name": "perplexity", "value": out["wikitext2"]["perplexity"]}
    elif eval_task and eval_task != "none":
        out["task"] = task_metric(model, tok, src.backbone.head, eval_task, cfg.eval_task_samples,
                                  max_length=min(cfg.eval_seq_len, 512), seed=cfg.seed)
        if progress:
            progress()
    out["seconds"], out["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
    return out


def _record(step: str, label: str, options: dict, src: Source, size: int, m: dict, seconds, path) -> StepRecord:
    names = block_linear_names(src.backbone.model, src.backbone.view)
    nz, total = nonzero_weights(src.backbone.model, names)
    wt = m.get("wikitext2", {})
    task = m.get("task")
    return StepRecord(step=step, label=label, options=options, size_bytes=size, wikitext2_ppl=wt.get("perplexity"),
                      task=task["task"] if task else None, task_metric_name=task["metric_name"] if task else None,
                      task_metric=task["value"] if task else None, compress_seconds=seconds,
                      eval_seconds=m.get("seconds"), params=count_params(src.backbone.model), nonzero_params=nz,
                      path=str(path) if path else None,
                      extra={"block_linear_weights": total, "eval_cpu_seconds": m.get("cpu_seconds")})


def run_compress(cfg: CompressConfig, progress_factory=None, log=print) -> dict:
    """Run one step; returns {"records": [...], "out": folder, "info": step stats}."""
    step, opts = get_step(cfg.method, cfg.options)
    check_task(cfg.calib_task, "--calib-task")
    check_task(cfg.eval_task, "--eval-task")
    adapter = Path(cfg.adapter) if cfg.adapter else None
    t0 = time.perf_counter()
    src = open_model(cfg.model, adapter)
    log(f"opened {cfg.model}" + (f" + adapter {adapter}" if adapter else "") +
        f" in {time.perf_counter() - t0:.1f}s")
    step.check_input(src)
    if adapter and src.side_module is not None:
        log(f"note: the {src.manifest.source.get('adapter_note', {}).get('method', '')} adapter cannot be folded into "
            f"the weights ({src.manifest.source.get('side_module_reason', '')}); it is kept beside the output in "
            "side_module/, and every figure below is of the base model without it")
    own = _adapter_task(src, log) if not (cfg.calib_task and cfg.eval_task) else None
    task = cfg.calib_task or own or "wikitext2"
    if task == "wikitext2" and not cfg.calib_task and step.needs_calibration and src.backbone.head != "causal_lm":
        raise ConfigError(f"{cfg.method} calibrates on --calib-task, by default the adapter's task, else wikitext2, "
                          f"which needs a causal LM; this model has a '{src.backbone.head}' head and no adapter task. "
                          "Give --calib-task: a classification task such as sst2, or your own .jsonl/.csv file.")
    eval_task = cfg.eval_task or own
    if eval_task and eval_task != "none":
        check_scorable(eval_task, src.backbone.head, src.backbone.model)
    records = [StepRecord(**r) for r in src.manifest.steps]

    def bar(name, total):
        return progress_factory(name, total) if progress_factory and total else None

    opts = step.resolve(src, opts)  # before the slow work: an option this model cannot take is refused now
    if cfg.eval_before and not records:
        m = measure(src, cfg, eval_task, bar("evaluate input", measure_units(src, cfg, eval_task)))
        label = "input model" if not adapter else "fine-tuned (merged)" if src.side_module is None else \
            "base (adapter kept beside)"
        records.append(_record("input", label, {}, src, _weights_bytes(cfg.model, src), m, None, cfg.model))

    ctx = StepContext(task=task, seed=cfg.seed)
    t1, c1 = time.perf_counter(), time.process_time()
    if step.needs_calibration:
        ctx.batches = calibration_batches(task, src.backbone.tokenizer, src.backbone.head, cfg.calib_samples,
                                          cfg.calib_seq_len, seed=cfg.seed)
        log(f"calibration: {cfg.calib_samples} sequences, {count_tokens(ctx.batches)} tokens of '{task_label(task)}'")
    total = src.backbone.view.num_blocks if cfg.method in ("gptq", "sparsegpt") else \
        (len(ctx.batches) if ctx.batches and cfg.method == "prune" else
         (opts.steps if cfg.method == "distill" else 0))
    info = step.apply(src, ctx, opts, bar(step.label(opts), total) if total else None)
    seconds, cpu_seconds = time.perf_counter() - t1, time.process_time() - c1
    log(f"{step.label(opts)}: {seconds:.1f}s ({cpu_seconds:.1f} CPU-s)")

    final = Path(cfg.out)
    src.manifest.dtype = cfg.dtype
    with written_whole(final, only=MODEL_OWNED) as out:  # stopped or failing here, the earlier output stays whole
        if src.side_module is not None:
            import shutil

            shutil.copytree(src.side_module, out / "side_module", dirs_exist_ok=True)
            src.manifest.extra["side_module"] = "side_module"
        save_compressed(src.backbone.model, src.backbone.tokenizer, src.manifest, out)
        src = _reopen(out, src)  # measure what was stored (float16 embeddings, packed codes), not what is in memory
        m = measure(src, cfg, eval_task, bar("evaluate output", measure_units(src, cfg, eval_task)))
        record = _record(cfg.method, step.label(opts), opts.model_dump(), src, folder_bytes(out), m, seconds, final)
        record.extra["compress_cpu_seconds"] = cpu_seconds  # all threads; robust to other load on the machine
        record.extra.update({k: v for k, v in info.items() if k not in ("losses", "on_policy", "step_seconds")})
        if "losses" in info:
            record.extra["distill"] = {k: info[k] for k in ("losses", "on_policy", "step_seconds")}
        if ctx.batches:
            record.extra["calibration"] = {"task": task_label(task), "sequences": cfg.calib_samples,
                                           "tokens": count_tokens(ctx.batches), "seq_len": cfg.calib_seq_len}
        records.append(record)
        src.manifest.steps = [r.to_json() for r in records]
        save_manifest_only(src, out)
        write_report(records, out, title=f"{cfg.model}: {' -> '.join(r.label for r in records)}")
    return {"records": [r.to_json() for r in records], "out": str(final), "info": info}


def _reopen(out: Path, src: Source) -> Source:
    from edgeft.compress.store import load_compressed
    from edgeft.models.backbone import Backbone, arch_of

    model, tok, manifest = load_compressed(out)
    bb = Backbone(name=str(out), path=str(out), model=model, tokenizer=tok, arch=arch_of(model.config),
                  head=manifest.head)
    return Source(bb, manifest, src.side_module)


def save_manifest_only(src: Source, out: Path) -> None:
    import json

    from edgeft.compress.store import MANIFEST

    (out / MANIFEST).write_text(json.dumps(src.manifest.to_json(), indent=2, default=str))
