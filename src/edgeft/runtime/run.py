"""One collaborative run end to end: cluster + model + task + method + strategy -> run directory.

plan (planner, on the devices still alive) -> calibrate this host -> start the processes (with
device and link emulation) -> supervise and recover -> report measured beside predicted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from edgeft.config import ConfigFile, nest_flat_keys, validate
from edgeft.errors import ConfigError, EdgeftError, PlanError
from edgeft.cores import usable_cores  # the emulated ranks share them
from edgeft.runtime.spec import RunSpec, RuntimeTrain, StrategyName
from edgeft.runtime.strategies import get as get_strategy, make_plan, repredict
from edgeft.train.rundir import check_resume_matches


class LaunchConfig(ConfigFile):
    """Everything `edgeft launch` needs; the same keys work from a YAML file."""

    what: ClassVar[str] = "launch config"
    keys_hint: ClassVar[str] = ("launch takes LaunchConfig's keys, and those of its train: and task: sections flat "
                                "too: the command line's options with underscores (epochs, lr, train_samples, "
                                "data_file, ...)")

    cluster: str = Field(description="the cluster YAML, examples in examples/clusters/: --cluster FILE or "
                                     "'cluster:' in the config file")
    model: str = "smollm2-135m"
    task: dict = Field(description="a task name (sst2, ...) or data file: --task or 'task:' in the config file; "
                                   "a mapping takes the keys of finetune's task section")
    method: str = "pac"
    method_options: dict = Field(default_factory=dict)
    head: Literal["auto", "lm", "classifier"] = "auto"
    strategy: StrategyName = "hybrid"
    plan: Optional[str] = Field(None, description="a plan JSON written by an earlier launch (plan.attempt0.json)")
    train: RuntimeTrain = Field(default_factory=RuntimeTrain)
    out: str = "runs/launch"
    link_mode: Literal["auto", "tc", "shaper", "none"] = "auto"
    emulate_compute: bool = True
    threads: int = Field(1, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    heartbeat_s: float = Field(1.0, gt=0)
    cut: Optional[int] = Field(None, ge=1, description="split: blocks on each device (None: the planner picks)")
    devices: Optional[list[str]] = Field(None, description="use only these devices of the cluster")
    max_attempts: int = Field(4, ge=1)
    resume: bool = Field(False, description="continue the run in `out` from its last complete checkpoint")
    overwrite: bool = Field(False, description="replace the files of an earlier run in `out`")
    evaluate: bool = True
    dev_samples_eval: Optional[int] = None
    kill_device_at_step: Optional[list] = Field(None, description="[device name, global step]: fault injection")
    time_scale: Union[float, Literal["auto"]] = Field(
        1.0, description="time dilation: every compute and link rate is divided by it (latencies multiplied), "
                         "so devices faster than this host can be emulated; 'auto' picks the least that keeps "
                         "every device at least 2x slower than the host AND the whole emulated cluster on the "
                         "host's usable cores (os.sched_getaffinity) with the same 2x headroom: the plan's ranks "
                         "all run at once, an emulated rank of rate r asks r/(scale x host FLOP/s) of a core, a "
                         "rank that stays faster than the host (a GPU-class server) runs at host speed and "
                         "takes a full core: n_host_speed + 2 x sum(r / (scale x host)) <= cores")


    @model_validator(mode="after")
    def _knobs_of_this_strategy(self):
        """--cut places the split strategy's cut, --micro-batches the hybrid pipeline's; under another strategy
        nothing reads them, so they are refused rather than dropped."""
        given = [(flag, only) for flag, only, on in (("cut", "split", self.cut is not None),
                                                     ("train.micro_batches", "hybrid", self.train.micro_batches))
                 if on and self.strategy != only]
        if given:
            raise ValueError("; ".join(f"{flag} is only for --strategy {only}, not {self.strategy}"
                                       for flag, only in given))
        return self

    @field_validator("time_scale")
    @classmethod
    def _time_runs_forward(cls, scale):
        if scale != "auto" and not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"expected a number greater than 0 (every rate is divided by it) or 'auto', not {scale:g}")
        return scale

    @field_validator("kill_device_at_step")
    @classmethod
    def _kill_is_a_device_and_a_step(cls, kill: Optional[list]) -> Optional[list]:
        if kill is None:
            return None
        if len(kill) != 2 or not isinstance(kill[0], str) or isinstance(kill[1], bool) \
                or not isinstance(kill[1], int) or kill[1] < 0:
            raise ValueError(f"expected [device name, step], the step a whole number from 0 (e.g. [phone-b, 5]), "
                             f"not {kill!r}")
        return kill

    @field_validator("task")
    @classmethod
    def _task_is_named(cls, task: dict) -> dict:
        if "name" not in task and task.get("data_file"):
            return {**task, "name": task["data_file"]}  # your own file names the task, as in finetune
        if "name" not in task:
            raise ValueError("needs a name: use --task NAME (or --data-file FILE) or 'task: NAME' in the config file")
        return task

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "LaunchConfig":
        """As every config, and the task section checked as finetune's now, not in the workers later."""
        from edgeft.data import TaskConfig

        cfg = super().from_dict(data, source)
        validate(TaskConfig, cfg.task, source, cls.what, at=("task",))
        return cfg

    @classmethod
    def prepare(cls, data: dict, source: str) -> dict:
        """`task: sst2` is `task: {name: sst2}`, so --train-samples and the like can go into it; and the flat keys
        of the command line (`epochs: 2`, `train_samples: 64`, `data_file: notes.jsonl`, as finetune's config takes
        them) go into the `train:` / `task:` sections they belong to, where they were refused as unknown keys."""
        from edgeft.data import TaskConfig

        data = {**data, "task": {"name": data["task"]}} if isinstance(data.get("task"), str) else dict(data)
        # a key of neither section stays where it is, for the unknown-key error that names launch's keys
        out, unplaced = nest_flat_keys(data, source, set(cls.model_fields), {
            "train": set(RuntimeTrain.model_fields), "task": set(TaskConfig.model_fields) - {"name"}})
        return {**out, **{k: data[k] for k in unplaced}}


config_from = LaunchConfig.from_dict


def _workload(cfg: LaunchConfig):
    """Task, featurized data (for the real padded sequence length), arch, head, and the notes a user should read
    about the data before the run (finetune's: sizes asked beyond the task's, rows --max-length shortened; the
    workers encode the rows again, so only here are the train and dev rows counted)."""
    from transformers import AutoTokenizer

    from edgeft.data import TaskConfig, load_task
    from edgeft.data.features import Featurizer, check_features, cut_notes, objective_for
    from edgeft.data.tasks import size_notes
    from edgeft.models.backbone import resolve
    from edgeft.models.arch import arch_from_hf_config
    from edgeft.runtime.strategies.common import eval_rows
    from edgeft.train.batches import epoch_batches
    from edgeft.train.recipe import head_for
    from edgeft.train.setup import check_positions

    task = load_task(TaskConfig(**cfg.task))
    head = head_for(cfg.model, task, cfg.head)
    path, _ = resolve(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = json.loads((Path(path) / "config.json").read_text())
    arch = arch_from_hf_config(config, cfg.model)
    feat = Featurizer(task, tok, objective_for(task, head), task.config.max_length if task.config else 128)
    check_positions(cfg.model, arch, config, feat.max_length, " (or task.max_length in a config file)")
    feats = feat.encode(task.train)
    check_features(feat, feats, "training")
    cut = [feat.cut]
    dev = eval_rows(task, cfg.dev_samples_eval) if cfg.evaluate else []
    dev_feats = feat.encode(dev)  # for the count and the check alone: the rank that evaluates encodes them
    cut.append(feat.cut)
    if cfg.evaluate:
        check_features(feat, dev_feats, "dev")
    notes = size_notes(task) + cut_notes(cut, [len(task.train), len(dev)], feat.max_length)
    batches = epoch_batches(len(feats), cfg.train.batch_size, cfg.train.seed, 0, cfg.train.max_steps_per_epoch)
    widths = [max(len(feats[i]["input_ids"]) for i in b) for b in batches]
    return task, head, feat, feats, arch, batches, sum(widths) / len(widths), notes


def _device_shapes(cfg: LaunchConfig, cluster, table, samples: int, steps: int) -> tuple[int, int | None]:
    """(rows one device computes at a time, rows of its PAC cached step or None), as this run's plan
    will have them (the strategy's Strategy.device_rows says)."""
    return get_strategy(cfg.strategy).device_rows(cfg, cluster, table, samples, steps)


def launch(cfg: LaunchConfig, say=print, progress=None, on_start=None) -> dict:
    """Run `cfg`; `progress(beats)` is called with the workers' heartbeats; `on_start(total_steps)` once the plan
    is printed, before any worker starts (the fill pass of hybrid PAC counts one unit per batch). A stop signal ends it cleanly (see processes.stop_on_signals) with an `interrupted`
    event and metrics.json saying how far it got, then re-raises processes.Interrupted."""
    from edgeft.runtime import run_summary
    from edgeft.processes import Interrupted, stop_on_signals
    from edgeft.train.rundir import claim

    run = claim(cfg.out, resume=cfg.resume, overwrite=cfg.overwrite)  # refuse a used folder before any work
    t0 = time.time()
    with run, stop_on_signals():
        try:
            return _launch(cfg, run, say, progress, on_start)
        except Interrupted as stop:
            if run.begun:
                run_summary.write_interrupted(run, cfg, stop.name, time.time() - t0)
            raise
        except EdgeftError as err:
            if run.begun:
                try:
                    run_summary.write_failed(run, cfg, str(err), time.time() - t0)
                except EdgeftError:  # (a damaged checkpoint, say): the run's own error is the one to report
                    pass
            raise


def planned_devices(plan: dict) -> set[str]:
    """The devices a launch plan gives a process (ranks of kind device; the server's rank is not one)."""
    return {r["name"] for r in plan["ranks"] if r.get("kind") == "device"}


def _plan_blocks(layout: dict) -> int | None:
    """How many blocks a launch plan's layout places (hybrid's stages, deft's per-rank ranges); None for split,
    whose layout names only its cut."""
    if "stages" in layout:
        return max(st["blocks"][1] for st in layout["stages"])
    if "blocks" in layout:
        return max(b[1] for b in layout["blocks"].values() if b)
    return None


def _given_plan(cfg: LaunchConfig, devices: list[str], num_layers: int) -> dict | None:
    """The --plan file, checked before any work: a launch plan (plan.attempt0.json) for this strategy and a model
    of this many blocks, whose devices the run has (it runs until one of them is lost; then the run re-plans)."""
    if not cfg.plan:
        return None
    path = Path(cfg.plan)
    if not path.is_file():
        raise ConfigError(f"--plan {path}: no such file")
    try:
        plan = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"--plan {path}: not valid JSON ({err})") from None
    if not isinstance(plan, dict) or not {"strategy", "ranks", "layout", "predicted"} <= set(plan):
        raise ConfigError(f"--plan {path}: not a launch plan. --plan takes the plan.attempt0.json an earlier "
                          "`edgeft launch` wrote in its run directory; the plan.json of `edgeft plan` is a report "
                          "(launch plans the run itself without --plan)")
    if plan["strategy"] != cfg.strategy:
        raise PlanError(f"{path}: plan is for strategy {plan['strategy']!r}, not {cfg.strategy!r}")
    try:
        placed = _plan_blocks(plan["layout"])
        cut = plan["layout"].get("cut")
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"--plan {path}: its layout is malformed ({err!r}); use a plan.attempt0.json as "
                          "`edgeft launch` wrote it") from None
    if placed is not None and placed != num_layers or cut is not None and not 0 < cut < num_layers:
        size = f"places {placed} blocks" if placed is not None else f"cuts after block {cut}"
        raise ConfigError(f"--plan {path}: the plan {size}, and {cfg.model} has {num_layers}: it was made for "
                          "another model; plan this one (leave --plan out)")
    priced = plan.get("priced_for") or {}
    if not isinstance(priced, dict) or priced and not (type(priced.get("steps_per_epoch")) is int
                                                       and priced["steps_per_epoch"] > 0):
        raise ConfigError(f"--plan {path}: priced_for must map the plan's settings, steps_per_epoch a whole number "
                          f"above 0, not {priced!r} (or be left out: the predicted times are then the plan's)")
    if priced.get("method", cfg.method) != cfg.method:  # its layout (PAC's cache shares) and prices are that method's
        raise ConfigError(f"--plan {path}: the plan was made for method {priced['method']!r}, this run trains "
                          f"{cfg.method!r}; plan this one (leave --plan out)")
    planned = sorted(planned_devices(plan))
    if not set(planned) <= set(devices):
        raise ConfigError(f"--plan {path}: the plan places devices {planned}, this run has {sorted(devices)}; "
                          "give a cluster (and --devices) that has them, or drop --plan")
    return plan


# What a plan's predicted times were priced for (RuntimePlan.priced_for), grouped by what a reused plan does when
# this run's differ: settings that price every step (its times are then the plan's, and said so) ...
STEP_PRICE = {"batch_size": "batch size", "mean_padded_seq_len": "mean padded sequence length",
              "host_flops": "host calibration FLOP/s", "time_scale": "time scale"}
# ... and, with the batch size, the settings that decide each epoch's batches (PAC's later_epochs_s follow them)
BATCH_ORDER = {"train_rows": "train rows", "steps_per_epoch": "steps per epoch", "seed": "seed", "epochs": "epochs"}
HOST_SAME_WITHIN = 0.05  # relative: two calibrations of one host differ by a few percent


def priced_settings(cfg: LaunchConfig, train_rows: int, steps: int, seq: float, host: dict | None,
                    scale: float) -> dict:
    """The settings of this run that its plan's predicted times depend on (STEP_PRICE and BATCH_ORDER)."""
    return {"train_rows": train_rows, "steps_per_epoch": steps, "batch_size": cfg.train.batch_size,
            "epochs": cfg.train.epochs, "seed": cfg.train.seed, "mean_padded_seq_len": seq,
            "host_flops": host["host_flops"] if host else None, "time_scale": scale, "method": cfg.method}


def _differs(key: str, then: dict, now: dict) -> bool:
    a, b = then.get(key), now[key]
    if key == "host_flops" and a and b:
        return not math.isclose(a, b, rel_tol=HOST_SAME_WITHIN)
    return a != b


def _shown(value) -> str:
    return "none" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def reused_plan(plan: dict, now: dict, path: str):
    """The --plan file's plan for a run priced for `now`, and what to tell the user: (RuntimePlan, notes, warning).

    Its predicted times were made for the run that wrote it (its priced_for). An epoch's time is a predicted step x
    that run's steps per epoch, so another step count is rescaled exactly (a note). A different setting that prices
    each step (STEP_PRICE) cannot be rescaled: the warning names what differs, the times staying the plan's. PAC's
    per-epoch times on the cache (later_epochs_s) follow that run's batches; for other batches they are dropped,
    leaving the plan's mean cached epoch (later_epoch_s). A plan file that records no priced_for is warned about."""
    from edgeft.runtime.placement import RuntimePlan

    then = plan.get("priced_for") or {}
    if not then:
        return RuntimePlan(**plan), [], (f"--plan {path} does not record the settings its predicted times were made "
                                         "for (an older edgeft wrote it): they are that run's, which may differ from "
                                         "this one's")
    predicted, notes = dict(plan["predicted"]), []
    if isinstance(predicted.get("emulated"), dict):  # deft's and split's times as this host emulates them
        predicted["emulated"] = dict(predicted["emulated"])
    ratio = now["steps_per_epoch"] / then["steps_per_epoch"]
    if ratio != 1:
        for times in (predicted, predicted.get("emulated") or {}):
            times.update({k: times[k] * ratio for k in ("epoch_s", "later_epoch_s") if times.get(k) is not None})
        notes.append(f"--plan {path}: predicted epoch times rescaled from its {then['steps_per_epoch']} to this "
                     f"run's {now['steps_per_epoch']} steps per epoch")
    if predicted.get("later_epochs_s") and any(_differs(k, then, now) for k in [*BATCH_ORDER, "batch_size"]):
        del predicted["later_epochs_s"]
        notes.append(f"--plan {path}: its per-epoch times on the activation cache follow its own run's batches; "
                     "this run's later epochs are predicted at its mean cached epoch")
    warning = None
    if any(_differs(key, then, now) for key in STEP_PRICE):
        differ = "; ".join(f"{label} {_shown(then.get(key))} then, {_shown(now[key])} now" for key, label in
                           {**STEP_PRICE, **BATCH_ORDER}.items() if _differs(key, then, now))
        warning = (f"--plan {path}: its predicted times were made for the run that wrote it, which differs from this "
                   f"one ({differ}), so they are that run's{' rescaled to these steps' if ratio != 1 else ''}, "
                   "not priced for this run (leave --plan out to plan this run)")
    kept = {**then, "steps_per_epoch": now["steps_per_epoch"]}  # what the times now stand for
    return RuntimePlan(**{**plan, "predicted": predicted, "priced_for": kept}), notes, warning


def _check_kill(cfg: LaunchConfig, devices: list[str], total_steps: int) -> None:
    """A fault injection that would never fire (a device the run does not have, a step it never reaches)
    is refused before any work, instead of a run that ends without the fault it was started to show."""
    if not cfg.kill_device_at_step:
        return
    name, step = cfg.kill_device_at_step
    if name not in devices:
        raise ConfigError(f"--kill-device {name}:{step}: no device named {name!r} in this run; choose one of "
                          f"{', '.join(devices)}")
    if step >= total_steps:
        raise ConfigError(f"--kill-device {name}:{step}: the run has {total_steps} training steps "
                          f"(0..{total_steps - 1}), so step {step} is never reached; choose a step below {total_steps}")


def _check_resume_has_work(cfg: LaunchConfig, out: Path, steps: int) -> None:
    """--resume of a run whose last checkpoint is at its end has nothing to train: the workers started, evaluated the
    untrained model (hybrid, before loading the checkpoint), trained nothing, and metrics.json's dev metric became
    that untrained model's, over the finished run's. Refused before anything is written."""
    from edgeft.runtime.checkpoint import latest

    found = latest(out / "checkpoint")
    if found is None:
        return
    path, meta = found
    total = steps * cfg.train.epochs
    if meta.get("global_step", 0) >= total or meta.get("epoch", 0) >= cfg.train.epochs:
        raise ConfigError(f"--resume: the run in {out} has finished: its last checkpoint ({path.name}, step "
                          f"{meta.get('global_step')}) is after all {cfg.train.epochs} epoch(s) ({total} steps), so "
                          f"there is nothing left to train; its result is in {out / 'adapter'} and metrics.json. "
                          "To train on, resume with more --epochs; to start again, use --overwrite or another --out")


def _check_kill_has_work(cfg: LaunchConfig, ranks: list[dict]) -> None:
    """A device the plan leaves idle has no process to kill: refused as soon as the plan is known (the --plan file,
    before calibration; else the first plan, before any worker starts), not when the workers are about to start."""
    if not cfg.kill_device_at_step:
        return
    name, step = cfg.kill_device_at_step
    working = [r["name"] for r in ranks]
    if name not in working:
        raise ConfigError(f"--kill-device {name}:{step}: {name!r} has no work in the plan (no process to kill); "
                          f"the plan gives work to {', '.join(working)}: choose one of those")


def _check_plan_fits(cfg: LaunchConfig, cluster, table, rows: int, steps: int) -> None:
    """A cluster no plan fits (a block no device's memory holds, a link of rate 0 that must carry data) is refused
    before the run folder is written: it was refused only after config.yaml and events.jsonl were, so the corrected
    command into the same --out needed --overwrite. Priced from the cost model alone (this host's calibration changes
    the times, not what fits); anything but a PlanError is left to the real planning after the calibration."""
    try:
        make_plan(cfg.strategy, cluster, table, rows, steps, cfg.train.micro_batches, cfg.cut)
    except PlanError:
        raise
    except Exception:  # noqa: BLE001 - the real planning below says it with the calibrated table
        pass


def _launch(cfg: LaunchConfig, run, say, progress, on_start) -> dict:
    from edgeft.planner.cluster import load_cluster
    from edgeft.measure import calibrate as cal
    from edgeft.runtime import placement
    from edgeft.runtime import run_summary
    from edgeft.runtime.launcher import run_attempts
    from edgeft.runtime.netns import NetnsTopology, run_id_for_this_process, sweep_orphaned_namespaces, tc_available
    from edgeft.runtime.checkpoint import latest
    from edgeft.train.batches import epoch_batches
    from edgeft.methods import get_method
    from edgeft.methods.base import check_strategy

    check_strategy(cfg.method, cfg.strategy)  # before any process starts (each worker asks again)
    cluster = load_cluster(cfg.cluster)
    if cfg.devices:
        cluster = placement.pick(cluster, cfg.devices)
    out = Path(cfg.out)
    task, head, feat, feats, arch, batches, seq, notes = _workload(cfg)
    _check_kill(cfg, [d.name for d in cluster.devices + cluster.servers], len(batches) * cfg.train.epochs)
    given_plan = _given_plan(cfg, [d.name for d in cluster.devices], arch.num_layers)
    if given_plan:  # the plan is known already; else it is priced from this host's calibration below
        _check_kill_has_work(cfg, given_plan["ranks"])
    if cfg.resume:  # before config.yaml is rewritten and before a worker finds the checkpoint's tensors missing
        check_resume_matches(out, cfg.model_dump())
        _check_resume_has_work(cfg, out, len(batches))
    # the method's options are checked before the folder is written: a typo in --option left a config.yaml behind,
    # and the corrected launch into the same --out was refused as "the output folder is not empty"
    method = get_method(cfg.method, cfg.method_options)
    if cfg.cut is not None and cfg.cut >= arch.num_layers:
        raise ConfigError(f"--cut {cfg.cut}: the devices run the first cut blocks and the server the rest, so for "
                          f"{cfg.model}'s {arch.num_layers} blocks it must be between 1 and {arch.num_layers - 1}")
    steps = len(batches)
    kind = "causal_lm" if head == "causal_lm" else "classification"
    table = placement.make_table(arch, cfg.method, cfg.train.batch_size, seq, cfg.method_options, kind,
                                 task.num_labels if task.kind != "regression" else 1, cfg.train.grad_sync)
    if not given_plan:
        _check_plan_fits(cfg, cluster, table, len(feats), steps)
    run.begin(cfg.model_dump())  # inputs are valid: only now is the folder written
    import torch

    from edgeft.train.precision import cpu_precision_notes

    workers_on = "cuda" if torch.cuda.is_available() else "cpu"  # (edgeft.runtime.group: CPU when GPUs are fewer)
    for note in notes + cpu_precision_notes(cfg.train.precision, workers_on):
        say(f"warning: {note}")
    if cfg.resume and latest(out / "checkpoint") is None:
        note = f"--resume: {out} has no complete checkpoint (checkpoint/step-*/COMPLETE.json); starting from scratch"
        run.event("resume_missing", detail=note)
        say(f"warning: {note}")
    run.event("start", cluster=cluster.name, devices=[d.name for d in cluster.devices], model=cfg.model,
              task=task.name, method=cfg.method, strategy=cfg.strategy, steps_per_epoch=steps,
              mean_padded_seq_len=seq)

    # -- this host, measured -------------------------------------------------------------------------
    host = None
    if cfg.emulate_compute:
        rows = _device_shapes(cfg, cluster, table, len(feats), steps)
        host = _calibrate(cfg, task, head, feat, feats, batches, arch, rows, kind, cal)
        run.event("calibration", **{k: v for k, v in host.items() if k != "key"})
        say(f"host calibration: {host['host_flops'] / 1e9:.2f} GFLOP/s effective on this workload "
            f"(one thread{', cached' if host['cached'] else ''})")
        table = dataclasses.replace(table, step_fixed_s=host["step_fixed_s"], trainable_total=host["trainable_params"],
                                    cached_step_flops=host.get("cached_step_flops", 0.0),
                                    cached_call_flops=host.get("cached_call_flops", 0.0),
                                    cached_rows_flops=tuple(host.get("cached_rows_flops", ())))
        if host.get("parts"):
            table = placement.with_measured_parts(table, host["parts"])

    scale, why_scale = 1.0, {}
    if cfg.time_scale == "auto":
        if host is None:
            raise ConfigError("time_scale=auto needs compute emulation (it compares devices with this host)")
        # the ranks that will run at once: those of the plan for this cluster (dilation scales every time
        # alike, so the dilated cluster gets the same placement)
        probe = make_plan(cfg.strategy, cluster, table, len(feats), steps, cfg.train.micro_batches, cfg.cut)
        scale, why_scale = auto_time_scale([(r["name"], r["kind"], r["device_flops"]) for r in probe.ranks],
                                           host["host_flops"], usable_cores())
    else:
        scale = float(cfg.time_scale)
    if scale != 1.0:
        cluster = dilate(cluster, scale)
        run.event("time_dilation", scale=scale, note="rates divided, latencies multiplied; divide measured and "
                                                     "predicted times by the scale for the real cluster",
                  **why_scale)
        say(f"time dilation x{scale:.1f}: the cluster runs {scale:.1f}x slower than real, predictions likewise")

    # -- link emulation --------------------------------------------------------------------------------
    mode = cfg.link_mode
    why = ""
    if mode in ("auto", "tc"):
        ok, why = tc_available()
        if mode == "tc" and not ok:
            raise ConfigError(f"link_mode=tc: traffic control is not usable here ({why}); use link_mode=shaper")
        mode = "tc" if ok else "shaper"
    run.event("link_emulation", mode=mode, reason=why or ("kernel tc tbf in network namespaces for bandwidth, "
                                                          "latency by the in-process shaper" if mode == "tc" else ""))
    say(f"link emulation: {mode}" + (f" ({why})" if why and mode == "shaper" else ""))
    if mode == "tc":
        swept = sweep_orphaned_namespaces()
        if swept:
            run.event("namespaces_swept", names=swept)
            say(f"removed {len(swept)} network namespace(s) left by a launch that was killed before its clean-up")

    fill_first = method.fills_cache_first(cfg.strategy)
    now = priced_settings(cfg, len(feats), steps, seq, host, scale)
    if given_plan:  # its predicted times were made for the run that wrote it: rescaled to this run, or said so
        given, notes, warning = reused_plan(given_plan, now, cfg.plan)
        run.event("plan_reused", path=cfg.plan, priced_for=given_plan.get("priced_for"), now=now, notes=notes,
                  warning=warning, predicted=given.predicted)
        for note in notes:
            say(note)
        if warning:
            say(f"warning: {warning}")

    def replan(devices: list[str]):
        sub = placement.pick(cluster, devices)
        # the given plan while every device it places is still here (devices it leaves idle have no process)
        if given_plan and planned_devices(given_plan) <= set(devices):
            return given
        p = make_plan(cfg.strategy, sub, table, len(feats), steps, cfg.train.micro_batches, cfg.cut)
        p.priced_for = now
        idle = get_strategy(cfg.strategy).explain_idle(p, sub, table)  # why a device given with --devices gets no work
        if idle is not None:
            p.planner["idle"] = idle
            for device, reason in idle.items():
                say(f"{device} idle: {reason}")
        emu = placement.emulated_cluster(sub, host["host_flops"]) if host else sub
        again = repredict(p, emu, table, steps) if emu != sub else None
        if again:  # some rank is faster than this host: predict what the emulation can really run
            p.predicted["emulated"] = again
        if cfg.strategy == "hybrid" and method.caches_backbone and p.planner.get("cached_shares"):
            names = [d.name for d in sub.devices]
            by_name = dict(zip(names, p.planner["cached_shares"]))
            p.layout["cached_shares"] = {str(i): by_name.get(r["name"], 0.0) for i, r in enumerate(p.ranks)}
            # with a fill pass first, every epoch trains on the cache; else the first trains in the pipeline
            p.layout["fill_first"] = fill_first
            later = [epoch_batches(len(feats), cfg.train.batch_size, cfg.train.seed, e, cfg.train.max_steps_per_epoch)
                     for e in range(0 if fill_first else 1, cfg.train.epochs)]
            per_epoch = placement.cached_epochs_s(p, emu, table, [f["id"] for f in feats], later)
            if per_epoch:  # the busiest owner of each step, from the run's batch order (before the run)
                p.predicted["later_epochs_s"] = per_epoch
        p.predicted["collective_timeout_s"] = collective_timeout(cfg, p)
        return p

    base = RunSpec(run_dir=str(out), strategy=cfg.strategy, model=cfg.model, head=cfg.head, task=cfg.task,
                   method=cfg.method, method_options=cfg.method_options, train=cfg.train, ranks=[], layout={},
                   link_mode=mode, threads=cfg.threads, timeout_s=cfg.timeout_s, heartbeat_s=cfg.heartbeat_s,
                   host_flops=host["host_flops"] if host else None, evaluate=cfg.evaluate,
                   dev_samples_eval=cfg.dev_samples_eval, resume=cfg.resume)
    run_id = run_id_for_this_process()

    def netns_factory(spec):
        if mode != "tc":
            return None
        return NetnsTopology(run_id, [(r.name, r.up_bps, r.down_bps) for r in spec.ranks]).setup()

    first = replan([d.name for d in cluster.devices])
    _check_kill_has_work(cfg, first.ranks)  # before any worker, namespace or plan file
    say(describe_plan(first, cfg, fill_first))
    if on_start:
        from edgeft.runtime.strategies.hybrid import fill_batches

        fill_steps = len(fill_batches(len(feats), cfg.train)) if fill_first else 0
        on_start(steps * cfg.train.epochs + fill_steps)
    planned = {"plan": first}

    def replan_once(devices):  # the first attempt runs the plan printed above
        p = planned.pop("plan", None)
        return p if p is not None and devices == [d.name for d in cluster.devices] else replan(devices)

    t0 = time.time()
    summary = run_attempts(base, replan_once, run, [d.name for d in cluster.devices], cfg.max_attempts,
                           netns_factory=netns_factory, on_tick=progress, say=say,
                           inject=tuple(cfg.kill_device_at_step) if cfg.kill_device_at_step else None)
    summary["wall_s"] = time.time() - t0
    summary["time_scale"] = scale
    return run_summary.write(run, cfg, summary, host, table, steps)


STEPS_PER_TIMEOUT = 3  # the ranks' collective timeout covers this many predicted steps at least


def collective_timeout(cfg: LaunchConfig, p) -> float:
    """The ranks' collective timeout for plan `p`: cfg.timeout_s, raised to STEPS_PER_TIMEOUT predicted steps where
    one step takes longer (deft sends the whole model down each round: over a phone's emulated link that can pass
    the 60 s default, and a rank waiting for it then gave up and the server was called lost). A lost device is found
    by its heartbeat, not by this timeout, so raising it does not slow that. A timeout_s set shorter is refused."""
    pred = p.predicted.get("emulated") or p.predicted
    step = float(pred.get("step_s") or 0.0)
    need = float(int(STEPS_PER_TIMEOUT * step) + 1)
    if need <= cfg.timeout_s:
        return cfg.timeout_s
    if "timeout_s" in cfg.model_fields_set:
        raise ConfigError(f"timeout_s={cfg.timeout_s:g}: a step of this plan is predicted to take {step:.0f} s, so the "
                          f"ranks would time out waiting for one another; give at least {need:.0f}, or leave "
                          "timeout_s out (edgeft then sets it)")
    return need


def describe_plan(p, cfg: LaunchConfig, fill_first: bool) -> str:
    """The placement and its predicted time, printed before any worker starts."""
    from edgeft.planner.render import block_range

    lay, role = p.layout, {}
    for si, st in enumerate(lay.get("stages") or []):
        for rk, share in zip(st["ranks"], st["shares"]):
            role[rk] = f"stage {si}: blocks {block_range(st['blocks'])}, {share:.0%} of each micro-batch"
    for rk, b in (lay.get("blocks") or {}).items() if isinstance(lay.get("blocks"), dict) else []:
        role[int(rk)] = f"blocks {block_range(b)}"
    if lay.get("cut"):  # split: every device runs the blocks below the cut, the server the rest and the head
        role.update({rk: f"blocks {block_range([0, lay['cut']])}" for rk in lay.get("devices", [])})
        role[lay.get("server", 0)] = f"blocks {lay['cut']}.. and the head"
    lines = [f"plan: {cfg.strategy} · {cfg.method} · {len(p.ranks)} process(es)"]
    for i, r in enumerate(p.ranks):
        lines.append(f"  {r['name']:<12} {r['kind']:<7} {role.get(i, '')}".rstrip())
    pred = p.predicted.get("emulated") or p.predicted
    later = p.predicted.get("later_epochs_s") or []
    if fill_first and pred.get("epoch_s"):
        lines.append(f"  predicted: cache fill (forward-only pipeline) at most {pred['epoch_s']:.1f} s"
                     + (", then " + ", ".join(f"{t:.1f}" for t in later) + " s per epoch on the cache" if later
                        else ""))
    elif pred.get("epoch_s"):  # "later epochs" only where the run has some (one epoch printed one too)
        lines.append(f"  predicted: epoch 1 {pred['epoch_s']:.1f} s"
                     + (f", later epochs {', '.join(f'{t:.1f}' for t in later)} s" if later else
                        (f", later epochs {pred['later_epoch_s']:.1f} s"
                         if pred.get("later_epoch_s") and cfg.train.epochs > 1 else "")))
    timeout = p.predicted.get("collective_timeout_s", cfg.timeout_s)
    if timeout > cfg.timeout_s:
        lines.append(f"  ranks wait up to {timeout:.0f} s for one another ({STEPS_PER_TIMEOUT} predicted steps; "
                     f"timeout_s {cfg.timeout_s:g} is shorter)")
    return "\n".join(lines)


def auto_time_scale(ranks: list[tuple[str, str, float]], host_flops: float, cores: int,
                    headroom: float = 2.0) -> tuple[float, dict]:
    """The least dilation (>= 1) at which the emulation can keep up, for ranks (name, kind, FLOP/s) that run
    at the same time on `cores` cores of a host of `host_flops` (one thread's measured rate):

    - each device alone at least `headroom` x slower than the host: rate / scale <= host / headroom;
    - all of them together: an emulated rank of rate r computes r / (scale x host) of the time, i.e. asks
      that much of one core; a rank still faster than the host at this scale (a GPU-class server: it would
      need a dilation of ~1000x) is emulated at host speed and takes a full core; the slowed ranks' demand,
      with the same headroom, must fit the cores those leave: n_fast + headroom x sum(r / (scale x host))
      <= cores.

    Servers are not required to be slower than the host (they run clamped, at host speed, when faster).
    Raising the scale can only move a server from 'fast' to 'slowed', so the fixed-point iteration below
    ends after at most one step per server. Returns (scale, the figures that set it, for the run's events).
    Raises ConfigError when the host-speed ranks alone take every usable core."""
    H = float(host_flops)
    devices = [r for _, kind, r in ranks if kind == "device"]
    scale = max([1.0] + [headroom * r / H for r in devices])
    per_device = scale
    while True:
        fast = [n for n, _, r in ranks if r / scale >= H]
        slowed = [r for n, _, r in ranks if n not in fast]
        free = cores - len(fast)
        if free <= 0:
            raise ConfigError(
                f"time_scale=auto: {len(fast)} rank(s) ({', '.join(fast)}) run at this host's speed and take all "
                f"{cores} usable core(s), so no dilation leaves the emulated devices CPU to keep their rates; "
                "give time_scale explicitly, run fewer processes, or use a host with more cores")
        need = headroom * sum(slowed) / (H * free)
        if need <= scale * (1 + 1e-9):
            break
        scale = need
    demand = len(fast) + sum(r / (scale * H) for r in slowed)
    return scale, {"rule": "auto", "per_device_scale": per_device, "cores": cores, "host_speed_ranks": fast,
                   "demand_cores": demand}


def dilate(cluster, scale: float):
    """The same cluster `scale` times slower in every rate (flops form, explicit link rates)."""
    devices = []
    for d in cluster.devices:
        link = d.link.model_copy(update={"rate_mbps": cluster.full_band_rate(d) / 1e6 / scale,
                                         "channel_gain_db": None, "distance_m": None,
                                         "latency_ms": d.link.latency_ms * scale})
        comp = type(d.compute)(flops=d.compute.rate() / scale)
        devices.append(d.model_copy(update={"compute": comp, "link": link, "position_m": None}))
    servers = [s.model_copy(update={"compute": type(s.compute)(flops=s.compute.rate() / scale)})
               for s in cluster.servers]
    return cluster.model_copy(update={"devices": devices, "servers": servers})


def _calibrate(cfg, task, head, feat, feats, batches, arch, rows, kind, cal):
    """Times this run's own first batches at one device's rows (see edgeft.measure.calibrate)."""
    from edgeft.methods.base import get_method, method_class
    from edgeft.models.blocks import BlockView
    from edgeft.runtime import placement
    from edgeft.runtime.strategies.common import slice_rows
    from edgeft.train.recipe import make_loss_fn
    from edgeft.train.setup import backbone_for

    rows, cached_rows = rows
    batches = batches[:4]

    def build():
        bb = backbone_for(cfg.model, task, head)
        method = get_method(cfg.method, method_class(cfg.method).timing_options(cfg.method_options, bool(cached_rows)))
        method.run_blockwise(cfg.strategy)  # time the model the strategy will run
        model = method.prepare(bb, task)
        model.train()
        full = [feat.collate([feats[i] for i in b]) for b in batches]
        dev = [{k: v for k, v in slice_rows(fb, 0, rows).items() if k != "ids"} for fb in full]
        cached = full[:2] if cached_rows else None  # whole batches: calibrate times 1 row .. all rows on two
        view = BlockView(model, bb.arch.family) if method.trains_backbone else None  # else: blocks run without grad
        return cal.Bench(model, make_loss_fn(feat), dev, lambda: feat.collate([feats[i] for i in batches[0]]), cached,
                         embed=view and view.embedding,
                         blocks=view and list(view.blocks))

    def flops(batch):
        t = placement.make_table(arch, cfg.method, int(batch["input_ids"].shape[0]), int(batch["input_ids"].shape[1]),
                               cfg.method_options, kind, task.num_labels)
        return cal.step_flops(t)

    key = {"model": cfg.model, "method": cfg.method, "options": cfg.method_options, "task": task.name,
           "rows": rows, "cached_rows": cached_rows, "batch_size": cfg.train.batch_size,
           "max_length": cfg.task.get("max_length"), "batches": [len(b) for b in batches],
           "widths": [max(len(feats[i]["input_ids"]) for i in b) for b in batches]}
    return cal.calibrate(build, key, flops)
