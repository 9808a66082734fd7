"""What a client or the server needs locally: the task, this client's shard, the backbone and its method.

Building it costs a model load (about 20 s for SmolLM2 on 2 cores), so it is kept per process: in
simulation one ClientApp process serves many virtual clients, and the trainable parameters are reset
from the message (or from w0) at the start of every round, never carried over between clients.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch
from flwr.app import Array, ArrayRecord

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer
from edgeft.errors import ConfigError, DataError
from edgeft.federated.config import FederatedConfig
from edgeft.federated.data import (  # noqa: F401  (data_and_validation, seeded_rng: used by the apps)
    DATA_FIELDS, config_key, data_and_validation, data_for, seeded_rng)
from edgeft.methods.mezo import named_trainables
from edgeft.quiet import quiet_libraries
from edgeft.train.meters import PeakMemory
from edgeft.train.precision import Precision
from edgeft.train.recipe import make_loss_fn
from edgeft.train.setup import open_session


@dataclass
class Setup:
    cfg: FederatedConfig
    task: object
    backbone: object
    featurizer: Featurizer
    method: object
    model: torch.nn.Module
    names: list[str]
    params: list[torch.nn.Parameter]
    w0: list[torch.Tensor]
    loss_fn: object
    parts: list[list[int]] = field(default_factory=list)
    local_files: dict = field(default_factory=dict)
    _feats: dict = field(default_factory=dict)
    _dev: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        """Where the model lives: the CPU in every Flower run; a GPU with local_grid.run_in_process(device=...)."""
        return str(next(self.model.parameters()).device)

    # -- trainable state <-> Flower arrays -------------------------------------------------------
    def arrays(self) -> ArrayRecord:
        return ArrayRecord({n: Array(p.detach().cpu().numpy().copy()) for n, p in zip(self.names, self.params)})

    def load_arrays(self, record: ArrayRecord) -> None:
        missing = [n for n in self.names if n not in record]
        if missing:
            raise ConfigError(f"the server's arrays do not match this model (missing '{missing[0]}'): server and "
                              "clients must run the same model, task and method options")
        with torch.no_grad():
            for n, p in zip(self.names, self.params):
                p.copy_(torch.from_numpy(record[n].numpy()).to(p.dtype))

    def reset_to_w0(self) -> None:
        with torch.no_grad():
            for p, w in zip(self.params, self.w0):
                p.copy_(w)

    def digest(self) -> int:
        """A 63-bit fingerprint of the trainable values, bit for bit (for replay checks over the wire)."""
        h = hashlib.sha256()
        for p in self.params:
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        return int.from_bytes(h.digest()[:8], "big") >> 1

    # -- data ----------------------------------------------------------------------------------
    def use_local_file(self, pid: int, path: str) -> None:
        """This client trains on its own file (a SuperNode's `data-file`) instead of a slice of the task."""
        if self.local_files.get(pid) != path:
            self.local_files[pid] = path
            self._feats.pop(pid, None)

    def client_examples(self, pid: int) -> list[dict]:
        if pid in self.local_files:
            return local_examples(self.local_files[pid], self.task)
        if not 0 <= pid < len(self.parts):
            raise ConfigError(f"partition-id {pid} is outside 0..{len(self.parts) - 1}: start each SuperNode with "
                              f"--node-config 'partition-id=<0..{len(self.parts) - 1}>'")
        return [self.task.train[i] for i in self.parts[pid]]

    def client_features(self, pid: int) -> list[dict]:
        if pid not in self._feats:
            feats = self.featurizer.encode(self.client_examples(pid))
            if not feats:  # LM text shorter than one block (a SuperNode's own file, say): numpy's error before
                raise DataError(f"client {pid}: its text is {self.featurizer.tokens} tokens, less than one block of "
                                f"max_length {self.featurizer.max_length}; give it more text or lower max_length.")
            self._feats[pid] = feats
        return self._feats[pid]

    def val_features(self) -> list[dict]:
        """The server's validation rows (val_samples), which no client holds."""
        if "val" not in self._dev:
            _, _, val = data_and_validation(self.cfg)
            self._dev["val"] = self.featurizer.encode([self.task.train[i] for i in val])
        return self._dev["val"]

    def val_loss(self, batch_size: int) -> float:
        """Mean training loss of the current model over the validation rows (no gradients)."""
        feats = self.val_features()
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(feats), batch_size):
                chunk = feats[i:i + batch_size]
                total += float(self.loss_fn(self.model, self.featurizer.collate(chunk))) * len(chunk)
        return total / len(feats)

    def dev_features(self) -> list[dict]:
        if "dev" not in self._dev:
            self._dev["dev"] = self.featurizer.encode(self.task.dev)
        return self._dev["dev"]

    def batches(self, pid: int, rnd: int, steps: int, batch_size: int, salt: int = 0) -> list[dict]:
        """`steps` batches from this client's shard in a seeded order that changes every round."""
        feats = self.client_features(pid)
        rng = seeded_rng(self.cfg.seed, pid, rnd, salt, 2)
        order: list[int] = []
        out = []
        for _ in range(steps):
            chunk = []
            while len(chunk) < batch_size:
                if not order:
                    order = rng.permutation(len(feats)).tolist()
                chunk.append(order.pop())
            out.append(self.featurizer.collate([feats[i] for i in chunk]))
        return out


_CACHE: dict[tuple, Setup] = {}


def setup_for(cfg: FederatedConfig, role: str) -> Setup:
    """The cached Setup of this process for `cfg` (role 'server' or 'client' never share one)."""
    key = (role, config_key(cfg, DATA_FIELDS | {"model", "head", "algorithm", "zo_base", "zo_params", "method_options",
                                                 "precision"}))
    if key in _CACHE:
        return _CACHE[key]
    quiet_libraries()  # a ClientApp runs in a Ray worker, which never passed through the CLI's entry point
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task, parts = data_for(cfg)
    torch.manual_seed(cfg.seed)  # a task head the backbone lacks (SST-2's classifier) is drawn here: the same for all
    session = open_session(cfg.model, task, cfg.method(), head=cfg.head, max_length=cfg.max_length)
    task, backbone, featurizer, method = session.task, session.backbone, session.featurizer, session.method
    torch.manual_seed(cfg.seed)  # identical adapter initialisation on the server and on every client
    model = session.prepare()
    model.eval()
    named = zo_selection(cfg, named_trainables(method, model))
    names, params = [n for n, _ in named], [p for _, p in named]
    if not params:
        raise ConfigError(f"method options {cfg.method_options} leave nothing to train")
    w0 = [p.detach().clone() for p in params]  # FedKSeed replays from it; every run starts from it
    # every forward of a client or the server (zeroth-order estimates included) in the run's precision
    loss_fn = Precision(cfg.precision, "cpu").wrap(make_loss_fn(featurizer))
    s = Setup(cfg, task, backbone, featurizer, method, model, names, params, w0, loss_fn, parts)
    _CACHE[key] = s
    return s


def zo_selection(cfg: FederatedConfig, named: list[tuple[str, torch.nn.Parameter]]) -> list:
    """The parameters a zeroth-order run perturbs: zo_base's trainables, narrowed to cfg.zo_params if given.

    The others stay at their initial values on the server and on every client (for LoRA's A matrices: a
    fixed random projection), so replay and fingerprints cover exactly the parameters that move.
    """
    if not cfg.zo_params or not cfg.entry.zeroth_order:
        return named
    chosen = [(n, p) for n, p in named if any(s in n for s in cfg.zo_params)]
    if not chosen:
        examples = ", ".join(n for n, _ in named[:3])
        raise ConfigError(f"zo_params {cfg.zo_params} matches none of {cfg.zo_base}'s parameters (e.g. {examples})")
    return chosen


class Work:
    """Time and peak memory (CUDA allocator's on a GPU, else RSS) of one client's work on one message, reported
    back in its MetricRecord."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    def __enter__(self):
        self.memory = PeakMemory(self.device).start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.peak_mb = self.memory.peak_mb()
        return False

    def metrics(self) -> dict:
        return {"compute-s": float(self.seconds), "peak-memory-mb": float(self.peak_mb)}


def local_examples(path: str, task) -> list[dict]:
    """All rows of a device's own instruction file (columns instruction / input / response)."""
    if task.kind != "generation":
        raise ConfigError(f"data-file '{path}': a SuperNode's own file is supported for instruction (generation) "
                          f"tasks; '{task.name}' is a {task.kind} task")
    own = load_task(TaskConfig(name=path, dev_file=path, kind="generation"))
    return own.train


def node_partition(context) -> int:
    cfg = context.node_config
    if "partition-id" not in cfg:
        raise ConfigError("this SuperNode has no partition-id: start it with --node-config 'partition-id=N'")
    return int(cfg["partition-id"])


class EmulatedDropout(RuntimeError):
    """A client lost on purpose (--dropout): the ClientApp answers it with an error reply, not a traceback."""


def maybe_drop(cfg: FederatedConfig, rnd: int, pid: int) -> None:
    """Emulated device failure: with probability cfg.dropout, this client dies mid-round (seeded)."""
    if cfg.dropout and seeded_rng(cfg.seed, rnd, pid, 7).random() < cfg.dropout:
        raise EmulatedDropout(f"client {pid} lost mid-round {rnd} (emulated dropout, p={cfg.dropout})")
