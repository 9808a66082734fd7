"""The finetune recipe: task + backbone + method -> trained adapter, metrics, events and a plot.

Reads like torchtune's recipes: each step is one call to a small component, nothing hidden.
"""

from __future__ import annotations

import gc
import signal
import sys
import time
from pathlib import Path
from typing import ClassVar, Literal, Optional

import torch
from pydantic import Field, field_validator, model_validator

from edgeft.config import ConfigFile, nest_flat_keys as nest_flat, unknown_key, validate
from edgeft.data import TaskConfig, load_task
from edgeft.data.features import check_features, cut_notes, long_answer_notes
from edgeft.data.tasks import default_lengths, size_notes
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import ConfigError, ModelError
from edgeft.methods import get_method
from edgeft.methods.base import (
    METHODS, check_adapter_fits_task, check_backbone_matches, method_class, read_adapter_note, save_adapter,
)
from edgeft.processes import Interrupted, stop_on_signals
from edgeft.train import recompute
from edgeft.train.evaluate import evaluate
from edgeft.train.loop import Trainer, TrainConfig, resolve_device
from edgeft.train.meters import parameter_counts
from edgeft.train.objective import forward
from edgeft.train.plots import plot_run
from edgeft.train.precision import cpu_precision_notes, resolve_precision
from edgeft.train.rundir import check_resume_matches, claim
from edgeft.train.setup import backbone_for, check_max_length, head_for, start_session


class FinetuneConfig(ConfigFile):
    """Everything `edgeft finetune` needs; the same keys work from a YAML file (nested, or flat as the CLI's)."""

    what: ClassVar[str] = "finetune config"

    model: str = "smollm2-135m"
    task: TaskConfig = Field(description="a task name (sst2, dolly, ...) or your own data file: --task NAME, "
                                         "--data-file FILE, or 'task:' in the config file")
    method: str = "lora"
    method_options: dict = Field(default_factory=dict)
    head: Literal["auto", "lm", "classifier"] = "auto"
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: str = "runs/finetune"
    eval_before: bool = True
    resume: bool = False
    overwrite: bool = Field(False, description="replace the files of an earlier run in `out`")

    @field_validator("task", mode="before")
    @classmethod
    def _task_shorthands(cls, task):
        """`task: sst2` is `task: {name: sst2}`; your own file names the task when no name is given."""
        if isinstance(task, str):
            return {"name": task}
        if isinstance(task, dict) and "name" not in task and task.get("data_file"):
            return {**task, "name": task["data_file"]}
        return task

    @model_validator(mode="after")
    def _grad_checkpoint_helps(self):
        if self.train.grad_checkpoint:
            recompute.check_method(method_class(self.method), self.train.compile)
        return self

    @model_validator(mode="after")
    def _task_new_tokens(self):
        """The task's own number of tokens to generate when none is given (GSM8K's answers need 256)."""
        if self.train.max_new_tokens is None:
            self.train.max_new_tokens = default_lengths(self.task.name)[1]
        return self

    @model_validator(mode="after")
    def _lr_reaches_a_zeroth_order_method(self):
        """MeZO and FwdLLM step with their own `lr` option, not the optimizer's: `--lr` was taken, recorded in
        config.yaml and then ignored (an lr of 0.5 and of 1e-9 trained the same weights). It now sets that option;
        given both, they must agree."""
        if method_class(self.method).uses_optimizer:
            return self
        if self.train.grad_accum > 1:  # each batch took a whole step of its own: the option did nothing
            raise ConfigError(f"train.grad_accum (--grad-accum) {self.train.grad_accum}: {self.method} steps on each "
                              "batch's own loss differences, with no gradients to accumulate; raise --batch-size "
                              "instead")
        if self.train.lr is None:
            return self
        given = self.method_options.get("lr")
        if given is not None and float(given) != self.train.lr:
            raise ConfigError(f"train.lr (--lr) {self.train.lr:g} and method_options.lr (--option lr=) {given} "
                              f"disagree: {self.method} steps with its own lr; give one of them")
        self.method_options = {**self.method_options, "lr": self.train.lr}
        return self

    @classmethod
    def prepare(cls, data: dict, source: str) -> dict:
        return nest_flat_keys(data, source)


config_from_dict = FinetuneConfig.from_dict


def nest_flat_keys(data: dict, source: str = "config") -> dict:
    """Accept the flat keys the CLI uses (`epochs: 3`, `data_file: notes.jsonl`, `task_kind: generation`) beside
    the nested `task:`/`train:` form: each goes where FinetuneConfig keeps it (`seed` sets both seeds)."""
    top = set(FinetuneConfig.model_fields)
    task_keys, train_keys = set(TaskConfig.model_fields) - {"name"}, set(TrainConfig.model_fields)
    data = {**data, "task": {"name": data["task"]}} if isinstance(data.get("task"), str) else data
    out, unplaced = nest_flat(data, source, top, {"task": task_keys, "train": train_keys})
    for key in unplaced:
        method = data.get("method", FinetuneConfig.model_fields["method"].default)
        if isinstance(method, str) and method in METHODS and str(key) in METHODS[method].Options.model_fields:
            raise ConfigError(f"{source}: {key}: an option of method {method}: give it under method_options "
                              f"(method_options: {{{key}: {data[key]!r}}}), or --option {key}=VALUE")
        known = sorted(top | task_keys | train_keys | {"task_kind"})
        raise ConfigError(f"{source}: {key}: " + unknown_key(
            key, known, "flat keys are finetune's options with underscores (epochs, lr, data_file, ...); "
                        f"top-level keys: {', '.join(sorted(top))}"))
    return out


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def make_loss_fn(featurizer: Featurizer):
    def loss_fn(model, batch):
        return forward(model, batch, featurizer.objective, featurizer.label_token_ids)[0]

    return loss_fn


class StopAtStep:
    """A stop signal's first arrival (Ctrl-C, SIGTERM, a closed terminal): before training there is nothing to keep,
    so it stops at once; during training the Trainer stops after the step under way and checkpoints there. A second
    signal stops at once (processes.stop_on_signals)."""

    def __init__(self, say):
        self.say, self.trainer = say, None

    def __call__(self, signum: int) -> None:
        if self.trainer is None:
            raise Interrupted(signum)
        self.trainer.request_stop(signum)
        self.say(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint (send it again "
                 "to stop at once)")


def run_finetune(cfg: FinetuneConfig, progress_factory=None, say=None) -> dict:
    """Train and score; a stop signal ends it with an `interrupted` event and metrics.json saying how far it got
    (the checkpoint `--resume` continues from), then re-raises processes.Interrupted."""
    stopper = StopAtStep(say or _stderr)
    # refuse a used folder before any work
    with claim(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite) as run, stop_on_signals(wind_down=stopper):
        try:
            return _finetune(cfg, run, progress_factory, say, stopper)
        except Interrupted as stop:
            if run.begun:
                write_interrupted(run, cfg, stop, stopper.trainer)
            raise


def write_interrupted(run, cfg: FinetuneConfig, stop: Interrupted, trainer: Trainer | None) -> dict:
    """metrics.json of a stopped run: the steps done, the checkpoint to resume from and the losses so far."""
    state = run.checkpoint_dir / "state.pt"
    metrics = {"status": "interrupted", "signal": stop.name, "model": cfg.model, "task": cfg.task.name,
               "method": cfg.method, "epochs": cfg.train.epochs,
               "global_step": trainer.global_step if trainer else None,  # None: stopped before training went on
               "total_steps": trainer.steps_per_epoch * cfg.train.epochs if trainer else None,
               "checkpoint": str(state) if state.is_file() else None,
               "checkpoint_step": trainer.checkpoint_step if trainer else None,  # what --resume goes on from
               "losses": trainer.losses_so_far() if trainer else []}
    run.write_metrics(metrics)
    run.event("interrupted", signal=stop.name, global_step=metrics["global_step"], checkpoint=metrics["checkpoint"],
              checkpoint_step=metrics["checkpoint_step"])
    return metrics


def _finetune(cfg: FinetuneConfig, run, progress_factory, say, stopper: StopAtStep) -> dict:
    session = start_session(cfg.model, cfg.task, cfg.method, cfg.method_options, cfg.head, cfg.train.seed)
    task, backbone, featurizer, method = session.task, session.backbone, session.featurizer, session.method
    check_max_length(backbone, cfg.task.max_length)
    epochs = method.epochs_for(cfg.train, backbone.arch.family)
    if epochs != cfg.train.epochs:  # no epochs given: the method's own default (for this backbone's family)
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": epochs})})
    device = resolve_device(cfg.train.device)
    t0 = time.perf_counter()
    train_feats = featurizer.encode(task.train)
    check_features(featurizer, train_feats, "training")
    cut = [featurizer.cut]
    dev_feats = featurizer.encode(task.dev)
    check_features(featurizer, dev_feats, "dev")
    cut.append(featurizer.cut)
    seconds = time.perf_counter() - t0
    if cfg.resume:
        check_resume_matches(run.path, cfg.model_dump())

    def eval_fn(model):
        return evaluate(model, task, featurizer, dev_feats, cfg.train.eval_batch_size, device,
                        cfg.train.max_new_tokens)

    before = None  # the backbone as it is, scored before the method changes it (prompt tuning, PAC's head do)
    if cfg.eval_before and not (cfg.resume and (run.checkpoint_dir / "state.pt").exists()):
        before = eval_fn(backbone.model.to(device))
    # the method's options meet the model here (LoRA's target modules, PAC's taps): a bad one stops the run before
    # anything is written, so the corrected command can use the same --out
    model = method.place(session.prepare(), device)
    run.begin(cfg.model_dump())  # inputs are valid: only now is the folder written
    run.event("start", model=cfg.model, task=task.name, method=method.name, train_examples=len(task.train),
              dev_examples=len(task.dev), objective=featurizer.objective, device=str(device))
    run.event("featurized", seconds=seconds, train_features=len(train_feats), dev_features=len(dev_feats))
    for note in (size_notes(task) + cut_notes(cut, [len(task.train), len(task.dev)], cfg.task.max_length)
                 + long_answer_notes(featurizer, dev_feats, cfg.train.max_new_tokens, "--max-new-tokens")
                 + cpu_precision_notes(resolve_precision(cfg.train.precision, device), device)):
        (say or _stderr)(note)
    if cfg.resume and not (run.checkpoint_dir / "state.pt").is_file():
        note = f"--resume: {run.path} has no checkpoint ({run.checkpoint_dir / 'state.pt'}); starting from scratch"
        run.event("resume_missing", detail=note)
        (say or _stderr)(note)

    if before is not None:
        run.event("eval", epoch=0, metrics={k: v for k, v in before.items() if isinstance(v, (int, float))})

    trainable, total = parameter_counts(model)
    progress = progress_factory(cfg.train.epochs * len(range(0, len(train_feats), cfg.train.batch_size))) \
        if progress_factory else None
    cache = getattr(model, "cache", None)  # PAC's activation cache: its hits and misses go on the progress line
    if progress and cache is not None:
        advance = progress

        def progress(loss, **more):  # more: steps=N when a resumed run's bar skips the batches done before
            advance(loss, cache.progress_note(), **more)
    trainer = Trainer(model, method, featurizer, train_feats, cfg.train, make_loss_fn(featurizer), eval_fn, run,
                      progress)
    trainer.before, stopper.trainer = before, trainer
    result = trainer.fit(resume_from=run.checkpoint_dir if cfg.resume else None)
    before = trainer.before  # a resumed run's from its checkpoint

    save_adapter(run.adapter_dir, method, model, backbone, task, {"max_length": cfg.task.max_length})
    final = result.eval_history[-1] if result.eval_history else {}
    metrics = {
        "model": cfg.model, "task": task.name, "method": method.name,
        "metric_name": task.metric_name,
        "dev_metric_before": before.get(task.metric_name) if before else None,
        "dev_metric": final.get(task.metric_name),
        "dev_metrics": {k: v for k, v in final.items() if isinstance(v, (int, float))},
        "eval_history": [{k: v for k, v in e.items() if isinstance(v, (int, float))} for e in result.eval_history],
        "epoch_times_s": result.epoch_times_s,
        "train_time_s": sum(result.epoch_times_s),
        # the epochs (synchronised, PAC's cache fill included) over the steps: on CUDA a step's own time is host time
        "mean_step_time_s": sum(result.epoch_times_s) / max(result.steps, 1),
        "steps": result.steps,
        "final_train_loss": result.losses[-1] if result.losses else None,  # the last batch's (events.jsonl: more)
        "peak_memory_mb": result.peak_memory_mb,
        "memory_kind": result.memory_kind,
        "trainable_params": trainable,
        "total_params": total,
        "train_examples": len(task.train),
        "dev_examples": len(task.dev),
        "device": str(device),
        "torch": torch.__version__,
        "resumed_from": result.resumed_from,
    }
    if result.compile:
        metrics["compile"] = result.compile
    if cache is not None:
        metrics["activation_cache"] = cache.describe()  # hits, misses, writes, stale, corrupt, size
    if "samples" in final:
        metrics["generation_samples"] = final["samples"]
    run.write_metrics(metrics)
    run.event("done", dev_metric=metrics["dev_metric"])
    plot_run(run.events(), task.metric_name, run.path / "training.png")
    # Modules first imported inside this run (matplotlib's, above; torch._dynamo's through the first model load)
    # can leave a frame that holds itself (a cycle) and, through f_back, this frame and so the model, its device
    # cache and CUDA graphs: collected now, the run is freed as it returns, not when the collector happens to run.
    gc.collect()
    return metrics


def load_for_eval(model_name: str, task, head: str, adapter: Optional[Path]):
    """Backbone (+ adapter when given) ready for evaluation; checks the adapter fits the backbone."""
    if adapter is not None:
        note = read_adapter_note(adapter)
        check_adapter_fits_task(note, task, adapter)  # before the head is built from the note's num_labels
        try:
            backbone = backbone_for(model_name, task, note["head"], note.get("num_labels"))
        except (ConfigError, ModelError) as err:  # e.g. an encoder asked for a causal LM adapter's LM head
            raise type(err)(f"{adapter}: this adapter was trained on {note.get('backbone')!r} with a {note['head']} "
                            f"head, which --model {model_name} cannot give: {err}") from err
        check_backbone_matches(note, backbone, adapter)
        method = get_method(note["method"], note["options"])
        model = method.load(backbone, task, adapter)
        return backbone, model
    backbone = backbone_for(model_name, task, head_for(model_name, task, head))
    return backbone, backbone.model


COLUMN_KEYS = ("text_column", "text2_column", "label_column", "instruction_column", "input_column", "response_column")


def eval_task_config(task: Optional[str], data_keys: dict, dev_samples: Optional[int] = None,
                     max_length: Optional[int] = None, seed: int = 0, adapter: Optional[Path] = None) -> TaskConfig:
    """The task `edgeft eval` scores: a named task's dev split, or every row of your own file (of its dev file
    when one is given); a file given as the task is your own file too. A file of yours is read through the
    prompt template, label words and columns the adapter was trained with, unless given here: through another prompt
    an adapter would be scored on words it never learned to read, with no error to say so (and a file read for
    training with --text-column X needed the option again). Rows are cut to the adapter's own max_length unless one
    is given (eval's 128 scored an adapter trained at 48 on other inputs than its run's final dev metric), else to
    the task's (default_lengths)."""
    keys = dict(data_keys)
    if max_length is None and adapter is not None:
        max_length = read_adapter_note(adapter).get("max_length")
    if task and Path(task).suffix and "data_file" not in keys:
        keys["data_file"] = task
    if "data_file" in keys:
        keys.setdefault("dev_file", keys["data_file"])
        if adapter is not None:
            note = read_adapter_note(adapter)
            trained = note.get("task_config") or {}
            for k in ("prompt_template", "label_words", *COLUMN_KEYS):
                if trained.get(k) is not None:
                    keys.setdefault(k, trained[k])
            shape = note.get("task_shape") or {}
            if shape.get("kind") in ("classification", "regression", "generation"):
                keys.setdefault("kind", shape["kind"])  # the adapter's head decides, not the file's first row
            if shape.get("kind") == "classification" and shape.get("label_names"):
                keys.setdefault("label_names", shape["label_names"])  # class i is the adapter's class i, in any file
    name = task or keys.get("data_file")
    if name is None:
        raise ConfigError("no task given: use --task NAME or --data-file FILE.")
    return validate(TaskConfig, {"name": name, **keys, "dev_samples": dev_samples, "max_length": max_length,
                                 "seed": seed}, "command line", "task")


def _check_pairs_match(adapter: Path, task) -> None:
    """A file of yours scored with an adapter trained on pairs of texts must hold pairs, and one trained on single
    texts single ones: the other shape was read without a word (a single-text adapter scored pairs at 0.33)."""
    pair = (read_adapter_note(adapter).get("task_shape") or {}).get("pair")
    if isinstance(pair, bool) and pair != task.is_pair:
        def shape(p):
            return "pairs of texts (text, text2)" if p else "single texts"
        raise ConfigError(f"{adapter} was trained on {shape(pair)}, but the rows of {task.name} are "
                          f"{shape(task.is_pair)}: score it on a file of its own shape"
                          + (" (--text2-column names the second text's column)" if pair else
                             " (drop the text2 column, or fine-tune an adapter on pairs)") + ".")


def run_eval(model_name: str, task_cfg: TaskConfig, adapter: Optional[Path] = None, head: str = "auto",
             batch_size: int = 32, device: str = "auto", max_new_tokens: Optional[int] = None) -> tuple[str, int, dict]:
    """(task name, dev examples, dev metrics) of a backbone, with an adapter when given; generation answers get
    the task's own number of new tokens unless one is given."""
    max_new_tokens = max_new_tokens or default_lengths(task_cfg.name)[1]
    task = load_task(task_cfg)
    if adapter is not None and task_cfg.data_file:
        _check_pairs_match(adapter, task)
    backbone, net = load_for_eval(model_name, task, head, adapter)
    check_max_length(backbone, task_cfg.max_length, "")
    featurizer = Featurizer(task, backbone.tokenizer, objective_for(task, backbone.head), task_cfg.max_length)
    dev = featurizer.encode(task.dev)
    check_features(featurizer, dev, "dev")
    for note in size_notes(task) + long_answer_notes(featurizer, dev, max_new_tokens, "--max-new-tokens"):
        _stderr(note)
    dev_device = resolve_device(device)
    metrics = evaluate(net.to(dev_device), task, featurizer, dev, batch_size, dev_device, max_new_tokens)
    return task.name, len(dev), metrics
