"""Sharded, name-keyed checkpoints of trainables + optimizer state, written by every rank.

Each rank saves what it owns (its blocks, its stage, or a DP replica's copy) keyed by parameter
name, and the root marks the step complete only after all shards are on disk. Keys by name, not by
position, are what let a re-planned run with fewer devices pick up any partition of the model.
(The single-device Trainer's state.pt keys the optimizer by position, so it cannot be re-sharded.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from edgeft.errors import CacheError

DONE = "COMPLETE.json"
EVALS = "evals.json"  # the dev metrics so far, written by the rank that evaluates (not always the root)


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:07d}"


def save_shard(root: Path, step: int, shard: str, params: dict[str, torch.Tensor], optimizer=None,
               named: dict | None = None) -> None:
    """params: name -> tensor; optimizer state is stored under the same names."""
    d = step_dir(root, step)
    d.mkdir(parents=True, exist_ok=True)
    opt_state = {}
    if optimizer is not None and named is not None:
        by_id = {id(p): n for n, p in named.items()}
        for p, st in optimizer.state.items():
            if id(p) in by_id and by_id[id(p)] in params:
                opt_state[by_id[id(p)]] = {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v)
                                           for k, v in st.items()}
    tmp = d / f"{shard}.pt.tmp"
    blob = {"params": {n: t.detach().cpu().clone() for n, t in params.items()}, "optim": opt_state}
    try:  # through a Python file: a full disk is then OSError ENOSPC, not torch's "enforce fail" (read as a lost peer)
        with open(tmp, "wb") as fh:
            torch.save(blob, fh)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)  # a half-written shard only takes the space the logs need
        raise CacheError(f"{tmp}: cannot write the checkpoint shard ({str(err).splitlines()[0][:300]}); make room "
                         "in the run directory, then continue with --resume") from err
    tmp.replace(d / f"{shard}.pt")


def save_evals(root: Path, step: int, evals: list[dict]) -> None:
    """The evaluating rank's dev metrics up to this step, beside the shards: a resumed attempt reports the epochs
    before the stop and reuses the untrained model's metrics rather than measuring them again."""
    d = step_dir(root, step)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{EVALS}.tmp"
    tmp.write_text(json.dumps(evals))
    tmp.replace(d / EVALS)


def read_evals(ckpt: Path) -> list[dict]:
    """The dev metrics a complete checkpoint holds; none for one written before they were kept, or without them."""
    f = Path(ckpt) / EVALS
    if not f.is_file():
        return []
    try:
        evals = json.loads(f.read_text())
    except ValueError as err:
        raise CacheError(f"{f}: not valid JSON ({err}); delete it to resume without the earlier dev metrics.") from err
    if not isinstance(evals, list) or not all(isinstance(e, dict) and isinstance(e.get("epoch"), int) for e in evals):
        raise CacheError(f"{f}: expected a list of {{'epoch': N, metric: value}}; delete it to resume without the "
                         "earlier dev metrics.")
    return evals


def commit(root: Path, step: int, meta: dict, keep: int = 2) -> None:
    """Root only, after a barrier: the step is consistent. Older complete steps beyond `keep` go."""
    d = step_dir(root, step)
    tmp = d / f"{DONE}.tmp"  # whole or absent: a COMPLETE.json cut short marked a step complete that cannot be read
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    tmp.replace(d / DONE)
    done = sorted(p for p in Path(root).glob("step-*") if (p / DONE).is_file())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest(root: Path) -> tuple[Path, dict] | None:
    root = Path(root)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if (p / DONE).is_file())
    if not done:
        return None
    f = done[-1] / DONE
    try:  # damaged: named, as a damaged shard is, rather than a JSONDecodeError traceback from the launcher
        meta = json.loads(f.read_text())
        why = "" if isinstance(meta, dict) and isinstance(meta.get("global_step"), int) else \
            "expected a mapping with the step's global_step"
    except (OSError, ValueError) as err:
        why = str(err)
    if why:
        raise CacheError(f"{f}: unreadable ({why}); delete {done[-1]} to resume from the checkpoint before it.")
    return done[-1], meta


def load_into(ckpt: Path, named: dict[str, torch.nn.Parameter], optimizer=None) -> int:
    """Copy every saved tensor this rank has a parameter for; returns how many were loaded."""
    params, optim = {}, {}
    for f in sorted(Path(ckpt).glob("*.pt")):
        try:
            blob = torch.load(f, map_location="cpu", weights_only=True)  # tensors only: loading runs no code
        except Exception as err:
            raise CacheError(f"{f}: checkpoint shard cannot be read safely ({str(err).splitlines()[0][:300]}); "
                             f"delete {ckpt} to resume from the one before.") from err
        params.update(blob["params"])
        optim.update(blob["optim"])
    missing = [n for n in named if n not in params]
    if missing:
        raise CacheError(f"{ckpt}: no saved value for '{missing[0]}' ({len(missing)} missing): the checkpoint "
                         "belongs to another model or method.")
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(params[n].to(p.device))
    if optimizer is not None:
        for n, p in named.items():
            if n in optim:
                optimizer.state[p] = {k: (v.to(p.device) if torch.is_tensor(v) and v.dim() > 0 else v)
                                      for k, v in optim[n].items()}
    return len(named)
