"""Every federated algorithm, registered once (as Flower names a Strategy): its name, default learning
rate, the method its clients train with, what its protocol allows, and the module holding its server
rounds (`run_server`) and client work (`handle_train`).

Adding an algorithm is one module with those two functions and one `FederatedAlgorithm` here; the
config's validation, the apps and the client setup ask this registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class FederatedAlgorithm:
    name: str
    default_lr: float  # when the config gives none
    module: str  # edgeft.federated.<module>: run_server(...) and handle_train(...)
    method: str  # the method a client trains: LoRA itself, or a zeroth-order wrapper around cfg.zo_base
    zeroth_order: bool  # perturbs zo_base's parameters (zo_params applies); sends scalars or gradients, not arrays,
    #                     so SecAgg+ and DP (which act on model arrays) are not offered
    replays_seeds: bool = False  # clients rebuild the model by replaying (seed, scalar) pairs: the lr must be
    #                              constant and nothing else may move the weights; the server can pick the round

    def server(self) -> Callable:
        return importlib.import_module(self.module).run_server

    def client(self) -> Callable:
        return importlib.import_module(self.module).handle_train


# Learning rates: FedIT trains LoRA with AdamW (FedIT/Shepherd's order of magnitude); the zeroth-order ones
# follow MeZO's LoRA setting (lr 1e-4..5e-5, eps 1e-2) and FwdLLM.
ALGORITHMS: dict[str, FederatedAlgorithm] = {a.name: a for a in (
    FederatedAlgorithm("fedit", 3e-4, "edgeft.federated.fedit", "lora", zeroth_order=False),
    FederatedAlgorithm("fedkseed", 1e-4, "edgeft.federated.fedkseed", "mezo", zeroth_order=True, replays_seeds=True),
    FederatedAlgorithm("fedkseed-pro", 1e-4, "edgeft.federated.fedkseed", "mezo", zeroth_order=True,
                       replays_seeds=True),
    FederatedAlgorithm("fwdgrad", 1e-3, "edgeft.federated.fwdgrad", "fwdgrad", zeroth_order=True),
)}


def get(name: str, error: type[Exception] = ValueError) -> FederatedAlgorithm:
    if name not in ALGORITHMS:
        raise error(f"unknown algorithm {name!r}: choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
