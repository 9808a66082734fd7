"""The run's data and its split over clients: the same on the server, every client and the launcher.

Kept free of torch and Flower so `edgeft federate` can check that the partition works before they load.
"""

from __future__ import annotations

import json

import numpy as np

from edgeft.data import TaskConfig, load_task
from edgeft.errors import ConfigError
from edgeft.federated.config import FederatedConfig
from edgeft.federated.partition import partition


def seeded_rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


_DATA: dict[str, tuple] = {}
# The config fields the data and its split depend on (and nothing else does here).
DATA_FIELDS = {"task", "task_options", "train_samples", "eval_samples", "max_length", "seed", "clients", "partition",
               "alpha", "holdout_category", "val_samples"}


def config_key(cfg: FederatedConfig, fields: set[str]) -> str:
    """A cache key from the named config fields, derived from the config itself (nested options included)."""
    return json.dumps(cfg.model_dump(include=fields), sort_keys=True, default=str)


def data_for(cfg: FederatedConfig):
    """(task, partitions) for this run, the same on the server and on every client (cached per process)."""
    task, parts, _ = data_and_validation(cfg)
    return task, parts


def data_and_validation(cfg: FederatedConfig):
    """(task, partitions, validation row indices): `val_samples` seeded training rows go to the server's
    validation set before the rest is partitioned, so no client ever trains on them."""
    key = config_key(cfg, DATA_FIELDS)
    if key not in _DATA:
        task = load_task(TaskConfig(name=cfg.task, train_samples=cfg.train_samples, dev_samples=cfg.eval_samples,
                                    max_length=cfg.max_length, seed=cfg.seed, **cfg.task_options))
        if cfg.val_samples >= len(task.train):
            raise ConfigError(f"val_samples={cfg.val_samples} leaves no training rows ({len(task.train)} in all): "
                              "lower val_samples")
        val = sorted(seeded_rng(cfg.seed, 17).permutation(len(task.train))[:cfg.val_samples].tolist())
        keep = sorted(set(range(len(task.train))) - set(val))
        rows = [task.train[i] for i in keep]
        parts = partition(rows, cfg.clients, cfg.partition, cfg.alpha, cfg.seed, cfg.holdout_category)
        _DATA[key] = (task, [[keep[i] for i in p] for p in parts], val)
    return _DATA[key]


def check_text_blocks(cfg: FederatedConfig) -> None:
    """A language-modelling task packs each client's text into blocks of max_length tokens: a share shorter than one
    block gave that client no example, and each round failed in the clients with numpy's 'a must be a positive
    integer' and ended in a server error about missing arrays (a dev text shorter than one block: perplexity nan).
    Here, before Flower and Ray start, with the model's tokenizer (only LM tasks need it); once per run's data and
    model in a process (the CLI checks before --overwrite clears a run, and run_federated again)."""
    task, parts, val = data_and_validation(cfg)
    key = config_key(cfg, DATA_FIELDS | {"model"})
    if task.kind != "lm" or key in _BLOCKS_CHECKED:
        return
    from transformers import AutoTokenizer

    from edgeft.data.features import Featurizer, check_features
    from edgeft.errors import DataError
    from edgeft.models.backbone import resolve

    featurizer = Featurizer(task, AutoTokenizer.from_pretrained(resolve(cfg.model)[0]), "lm", cfg.max_length)
    for pid, rows in enumerate(parts):
        if not featurizer.encode([task.train[i] for i in rows]):
            raise DataError(f"task '{task.name}': client {pid}'s share of the text is {featurizer.tokens} tokens, "
                            f"less than one block of --max-length {cfg.max_length}, so it has nothing to train on; "
                            "lower --max-length, or give fewer --clients or more text (--train-samples).")
    check_features(featurizer, featurizer.encode(task.dev), "dev")
    if val:
        check_features(featurizer, featurizer.encode([task.train[i] for i in val]), "validation (val_samples)")
    _BLOCKS_CHECKED.add(key)


_BLOCKS_CHECKED: set[str] = set()  # config_key of the runs whose LM text check_text_blocks found long enough
