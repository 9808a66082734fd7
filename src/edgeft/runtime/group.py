"""Process group from the environment (env:// rendezvous), the same under `edgeft launch` and `torchrun`.

gloo on CPU, NCCL when this host has a GPU for each of its ranks (EDGEFT_BACKEND overrides). The timeout is the
bound on how long a collective waits for a silent peer: it is part of failure detection, not a performance knob.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from edgeft.errors import ConfigError


@dataclass
class Group:
    rank: int
    world: int
    local_rank: int
    backend: str
    device: torch.device
    # a gloo group of every rank for waits longer than the group's timeout (Comm.barrier(timeout_s)), made with the
    # longest such wait as its own timeout: gloo's monitored_barrier takes a timeout for the rank that collects, but
    # the other ranks' sends to it wait for the group's (a 60 s step timeout dropped the healthy devices waiting for
    # a slow evaluation on rank 0); NCCL's barrier takes only the group's
    waits: object = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"environment variable {name} is not set: start workers with `edgeft launch` or "
                          "`torchrun` (they set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def pick_backend() -> str:
    forced = os.environ.get("EDGEFT_BACKEND")
    if forced:
        if forced not in ("gloo", "nccl"):
            raise ConfigError(f"EDGEFT_BACKEND={forced!r}: use gloo or nccl")
        return forced
    if not torch.cuda.is_available():
        return "gloo"
    # NCCL refuses two ranks on one GPU ("duplicate GPU"): with more ranks on this host than GPUs (a launch of several
    # emulated devices on a one-GPU workstation), every rank runs on the CPU under gloo instead.
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return "nccl" if local <= torch.cuda.device_count() else "gloo"


WAIT_GROUP_TIMEOUT_S = 4 * 3600.0  # the bound of Comm.barrier(timeout_s) waits (strategies.common.EVAL_WAIT_S)


def init_from_env(timeout_s: float = 60.0) -> Group:
    """Join the group described by RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT."""
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = pick_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s), **kwargs)
    # every rank creates it, in this order
    waits = dist.new_group(backend="gloo", timeout=timedelta(seconds=WAIT_GROUP_TIMEOUT_S))
    return Group(rank, world, local_rank, backend, device, waits)


def new_groups(rank_lists: list[list[int]]) -> list:
    """One process group per rank list; every rank must call this with the same lists, in order."""
    return [dist.new_group(sorted(ranks)) if len(ranks) > 1 else None for ranks in rank_lists]


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
