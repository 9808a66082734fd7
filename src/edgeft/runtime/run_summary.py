"""The run directory's summary: measured time per epoch beside the plan's prediction, bytes per link,
peak memory per device against its budget, the loss curve, and a PNG of it all."""

from __future__ import annotations

import json
from pathlib import Path


def _results(run_dir: Path) -> dict[str, dict]:
    out = {}
    for f in sorted((run_dir / "ranks").glob("*.result.json")):
        r = json.loads(f.read_text())
        out[r["name"]] = r
    return out


def _parts_by_epoch(parts: list, steps: int) -> list[dict]:
    """Mean per step of each epoch: emulated compute, its host CPU, communication (link waits included)
    and the rest (collate, optimizer, loop bookkeeping); where a step's time went."""
    out = []
    for k in range(0, len(parts), max(steps, 1)):
        chunk = parts[k:k + steps]
        mean = [sum(p[i] for p in chunk) / len(chunk) for i in range(4)]
        out.append(dict(zip(("compute_s", "compute_host_cpu_s", "comm_s", "other_s"), mean)))
    return out


def _epochs_run(run_dir: Path) -> list[dict]:
    """Every epoch the run directory's attempts ended, in the order run, from the ranks' `epoch_end` events:
    those of attempts before a lost device or a stop that --resume continued too, which the last attempt's
    results do not hold. One per (attempt, epoch): the slowest rank's time (the ranks start and stop the clock
    at barriers, so they differ by a barrier's release alone); an epoch redone from a checkpoint older than its
    end is listed under each attempt that ran it."""
    ends: dict[tuple[int, int], dict] = {}
    for f in sorted((run_dir / "ranks").glob("*.events.jsonl")):
        for line in f.read_text().splitlines():
            e = json.loads(line)
            if e["event"] == "epoch_end":
                key = (e["attempt"], e["epoch"])
                if key not in ends or e["seconds"] > ends[key]["seconds"]:
                    ends[key] = e
    return [ends[k] for k in sorted(ends)]


ENDS = {"attempt_done": "ok", "device_lost": "lost", "interrupted": "interrupted", "error": "error",
        "over_memory": "over_memory"}  # the event that ends an attempt -> its status


def _attempts_run(events: list[dict]) -> list[dict]:
    """Every attempt the run directory records, in order: those of a launch that stopped before a --resume too
    (the launcher's own list holds this launch's alone). Its devices, how it ended, and for how long it ran."""
    out = []
    for e in events:
        if e["event"] == "attempt_start":
            out.append({"attempt": e["attempt"], "status": "stopped", "seconds": None, "ranks": e["ranks"],
                        "start": e["time"]})
        elif e["event"] in ENDS and out and out[-1]["seconds"] is None:
            out[-1].update(status=ENDS[e["event"]], seconds=e.get("seconds", e["time"] - out[-1]["start"]))
    return [{k: v for k, v in a.items() if k != "start"} for a in out]


def _attempt_plan(run_dir: Path, attempt: int) -> dict:
    """The plan attempt `attempt` ran (launcher.run_attempts writes it before starting the workers)."""
    return json.loads((run_dir / f"plan.attempt{attempt}.json").read_text())


def _epoch_row(plan: dict, end: dict, batch_size: int) -> dict:
    """One row of the epoch table: an `epoch_end` event beside the prediction of the plan of its attempt (for the
    cluster as emulated, as in `write`): an attempt re-planned on fewer devices is predicted by its own plan."""
    ep, t, partial = end["epoch"] - 1, end["seconds"], end["partial"]
    predicted = plan["predicted"]
    emu = predicted.get("emulated") or predicted
    # hybrid PAC with tap_norm=channel fills the cache first (a forward-only pipeline pass), so every epoch
    # trains on the cache; the fill is priced as the pipeline epoch, which also trains: an upper bound
    first_cached = 0 if plan["layout"].get("fill_first") else 1
    key = "epoch_s" if ep < first_cached else "later_epoch_s"
    pred = emu.get(key)
    per_epoch = predicted.get("later_epochs_s")  # PAC on the cache: per epoch, by its batches' owners
    if ep >= first_cached and per_epoch and ep - first_cached < len(per_epoch):
        pred = per_epoch[ep - first_cached]
    return {"epoch": ep + 1, "attempt": end["attempt"], "measured_s": t, "predicted_s": pred,
            "plan_s": predicted.get(key), "partial": partial,
            "error": (t - pred) / pred if pred and not partial else None,
            "samples_per_s": end["steps"] * batch_size / t if not partial else None}


def write(run, cfg, summary: dict, host: dict | None, table, steps: int) -> dict:
    run_dir = Path(run.path)
    plan = summary["plan"]
    spec = summary["spec"]
    results = _results(run_dir)
    ranks = {r.name for r in spec.ranks}  # a reused run directory may hold other ranks' old results
    final = [r for r in results.values() if r["attempt"] == spec.attempt and r["name"] in ranks]
    lead = max(final, key=lambda r: len(r["losses"]))  # the rank that saw the loss
    events = run.events()
    lost = [e for e in events if e["event"] == "device_lost"]
    # Measured times are compared with the prediction for the cluster as emulated (ranks faster than
    # this host run at its speed); the plan's own figure for the real cluster is kept beside it.
    emu = plan.predicted.get("emulated") or plan.predicted
    fill = None
    if lead.get("fill_s") is not None:
        fill = {"measured_s": lead["fill_s"], "predicted_max_s": emu.get("epoch_s")}
    ends = _epochs_run(run_dir)
    plans = {a: _attempt_plan(run_dir, a) for a in {e["attempt"] for e in ends}}  # each attempt's file read once
    epochs = [_epoch_row(plans[e["attempt"]], e, cfg.train.batch_size) for e in ends]
    per_device = []
    for r in sorted(final, key=lambda r: r["rank"]):
        per_device.append({
            "name": r["name"], "kind": r["kind"], "role": r.get("role"), "blocks": r.get("blocks"),
            "slowdown": r["slowdown"], "emulated_compute_s": r["emulated_compute_s"],
            "peak_memory_mb": r["peak_memory_mb"], "memory_budget_mb": r["memory_budget_mb"],
            "bytes_sent": r["link"]["sent_bytes"], "bytes_received": r["link"]["received_bytes"],
            "link_wait_s": r["link"]["link_wait_s"], "bytes_to": r["link"]["to"],
            "mean_step_s": sum(r["step_times_s"]) / max(len(r["step_times_s"]), 1),
            "step_parts_mean_s": _parts_by_epoch(r.get("step_parts_s") or [], steps),
            "cache": r.get("cache"),
            "predicted": (plan.predicted.get("per_device") or {}).get(r["name"])
            if isinstance(plan.predicted.get("per_device"), dict) else None})
    evals = lead.get("evals") or []
    metrics = {
        "strategy": cfg.strategy, "model": cfg.model, "task": cfg.task.get("name"), "method": cfg.method,
        "cluster": cfg.cluster, "devices": [r["name"] for r in plan.ranks if r["kind"] == "device"],
        "layout": plan.layout, "planner": plan.planner, "predicted": {k: v for k, v in plan.predicted.items()
                                                                       if k != "per_device"},
        "fill": fill, "epochs": epochs, "per_device": per_device, "losses": lead["losses"],
        "dev_metric": evals[-1] if evals else None,
        "dev_metric_before": evals[0] if evals and evals[0].get("epoch") == 0 else None,
        "evals": evals,
        "attempts": _attempts_run(events),
        "lost_devices": [{"device": e["device"], "reason": e["reason"], "attempt": e["attempt"]} for e in lost],
        "host_calibration": {k: v for k, v in (host or {}).items() if k != "key"},
        "link_mode": spec.link_mode, "wall_s": summary["wall_s"], "steps_per_epoch": steps,
        "time_scale": summary.get("time_scale", 1.0),
    }
    run.write_metrics(metrics)
    run.event("done", dev_metric=metrics["dev_metric"], attempts=len(summary["attempts"]))
    try:
        plot(metrics, run_dir / "runtime.png")
    except ImportError:  # a host without matplotlib still gets metrics.json
        pass
    return metrics


def write_interrupted(run, cfg, signal_name: str, wall_s: float) -> dict:
    """A stopped run's metrics.json: how far each rank got, the last complete checkpoint (from which
    `--resume` continues) and its losses; then the `interrupted` event."""
    metrics = _where_it_stopped(run, cfg, wall_s, status="interrupted", signal=signal_name)
    run.event("interrupted", signal=signal_name, wall_s=wall_s, last_checkpoint=metrics["last_checkpoint"],
              steps_reached=metrics["steps_reached"])
    return metrics


def write_failed(run, cfg, error: str, wall_s: float) -> dict:
    """metrics.json of a run that ended on an error after it began (a worker's, a device lost with no attempt
    left): it wrote none, so the folder did not say the run had ended, nor where --resume would go on from."""
    metrics = _where_it_stopped(run, cfg, wall_s, status="failed", error=error[-2000:])
    run.event("failed", error=error[-2000:], wall_s=wall_s, last_checkpoint=metrics["last_checkpoint"])
    return metrics


def _where_it_stopped(run, cfg, wall_s: float, **status) -> dict:
    """metrics.json of a run that did not finish: its status, how far each rank got, the last complete checkpoint
    and its losses."""
    from edgeft.runtime import checkpoint as ckpt
    from edgeft.runtime.faults import read_beats

    run_dir = Path(run.path)
    found = ckpt.latest(run_dir / "checkpoint")
    meta = found[1] if found else {}
    beats = read_beats(run_dir / "heartbeats")
    metrics = {
        **status, "strategy": cfg.strategy, "model": cfg.model,
        "task": cfg.task.get("name"), "method": cfg.method, "cluster": cfg.cluster, "wall_s": wall_s,
        "attempts": sum(1 for e in run.events() if e["event"] == "attempt_start"),
        "steps_reached": {b.get("name", str(r)): b.get("step", 0) for r, b in sorted(beats.items())},
        "last_checkpoint": ({"path": str(found[0]), "global_step": meta.get("global_step"),
                             "epoch": meta.get("epoch")} if found else None),
        "losses": meta.get("losses", []),
    }
    run.write_metrics(metrics)
    return metrics


def plot(metrics: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 3.8))
    ep = metrics["epochs"]
    xs = range(len(ep))
    a1.bar([x - 0.2 for x in xs], [e["predicted_s"] or 0 for e in ep], 0.4, label="predicted")
    a1.bar([x + 0.2 for x in xs], [e["measured_s"] for e in ep], 0.4, label="measured")
    a1.set_xticks(list(xs), [f"epoch {e['epoch']}" + (" (part)" if e["partial"] else "") for e in ep])
    a1.set(ylabel="seconds", title=f"{metrics['strategy']}: time per epoch")
    a1.legend()
    if metrics["losses"]:
        a2.plot([s for s, _ in metrics["losses"]], [v for _, v in metrics["losses"]], lw=1)
    for lost in metrics["lost_devices"]:
        a2.set_title(f"loss (lost {lost['device']})")
    if not metrics["lost_devices"]:
        a2.set_title("training loss")
    a2.set(xlabel="optimizer step")
    dev = metrics["per_device"]
    a3.bar([d["name"] for d in dev], [d["bytes_sent"] / 2**20 for d in dev], label="sent")
    a3.bar([d["name"] for d in dev], [d["bytes_received"] / 2**20 for d in dev], bottom=[d["bytes_sent"] / 2**20
                                                                                        for d in dev],
           label="received")
    a3.set(ylabel="MiB", title="bytes per link")
    a3.legend()
    a3.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
