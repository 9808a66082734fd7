"""Split a task's training examples over clients: IID, Dirichlet over labels/categories, or one task each.

Written by hand rather than with flwr-datasets' partitioners because those need Hugging Face `datasets`
objects, while edgeft tasks are plain lists of dicts; the Dirichlet split follows FedKSeed's
`partition_idx_labeldir` (per class, proportions ~ Dir(alpha); clients already holding their share get no
more; redraw until every client has at least `min_size` examples). Every split is a pure function of
the seed, so the server and each client compute the same one independently.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from edgeft.errors import ConfigError, DataError


def group_key(example: dict) -> str:
    """What Dirichlet and per-task splits group by: the category (instruction data) or the label."""
    if "category" in example:
        return str(example["category"])
    if "label" in example:
        return str(example["label"])
    raise ConfigError("this task has neither categories nor labels, which --partition dirichlet/task and "
                      "--holdout-category split by (instruction rows read them from a 'category' field): use "
                      "--partition iid without --holdout-category")


def iid(n_examples: int, n_clients: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(n_examples)
    return [sorted(part.tolist()) for part in np.array_split(order, n_clients)]


def dirichlet(keys: list[str], n_clients: int, alpha: float, seed: int, min_size: int = 10,
              max_tries: int = 1000) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    y = np.array(keys)
    classes = sorted(set(keys))
    n = len(keys)
    if n < n_clients * min_size:
        min_size = max(1, n // n_clients)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            drawn = rng.dirichlet(np.full(n_clients, alpha))
            p = np.array([pi * (len(part) < n / n_clients) for pi, part in zip(drawn, parts)])
            p = p / p.sum() if p.sum() > 0 else drawn  # everyone full already: keep the plain draw
            cuts = (np.cumsum(p) * len(idx)).astype(int)[:-1]
            for part, chunk in zip(parts, np.split(idx, cuts)):
                part.extend(chunk.tolist())
        if min(len(part) for part in parts) >= min_size:
            return [sorted(part) for part in parts]
    raise DataError(f"could not give each of {n_clients} clients {min_size} examples with alpha={alpha} "
                    f"in {max_tries} draws; use fewer clients, a larger alpha or more training samples")


def by_task(keys: list[str], n_clients: int) -> list[list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    names = sorted(groups)
    if n_clients != len(names):
        raise ConfigError(f"partition 'task' gives one client per task: this data has {len(names)} "
                          f"({', '.join(names)}); set --clients {len(names)}")
    return [groups[name] for name in names]


def partition(examples: list[dict], n_clients: int, scheme: str, alpha: float = 0.5, seed: int = 0,
              holdout: str | None = None) -> list[list[int]]:
    """Indices into `examples` for each client; rows of the held-out category go to nobody."""
    allowed = list(range(len(examples)))
    if holdout is not None:
        keys_all = [group_key(ex) for ex in examples]
        if holdout not in keys_all:
            raise ConfigError(f"holdout category '{holdout}' does not occur in the data "
                              f"(categories: {', '.join(sorted(set(keys_all)))})")
        allowed = [i for i, k in enumerate(keys_all) if k != holdout]
    if len(allowed) < n_clients:
        held = f" (the rows of '{holdout}' are held out)" if holdout is not None else ""
        raise ConfigError(f"{len(allowed)} training examples{held} cannot be split over {n_clients} clients: every "
                          f"client needs at least one; set --clients {max(1, len(allowed))} or fewer, or raise "
                          "--train-samples")
    if scheme == "iid":
        local = iid(len(allowed), n_clients, seed)
    elif scheme == "dirichlet":
        local = dirichlet([group_key(examples[i]) for i in allowed], n_clients, alpha, seed)
    elif scheme == "task":
        local = by_task([group_key(examples[i]) for i in allowed], n_clients)
    else:
        raise ConfigError(f"unknown partition '{scheme}' (iid, dirichlet, task)")
    return [[allowed[i] for i in part] for part in local]


def summary(examples: list[dict], parts: list[list[int]]) -> list[dict]:
    """Per client: size and the count of each category/label (for the run's events and plots)."""
    out = []
    for cid, part in enumerate(parts):
        counts: dict[str, int] = defaultdict(int)
        for i in part:
            try:
                counts[group_key(examples[i])] += 1
            except ConfigError:
                break
        out.append({"client": cid, "size": len(part), "groups": dict(sorted(counts.items()))})
    return out
