"""Run a federated configuration on Flower's simulation engine (Ray backend) on this machine.

Every client is a virtual SuperNode whose ClientApp runs in a Ray actor process; by default one actor
gets all the CPU cores, so clients run one after another and each client's compute time is its own.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional

from edgeft.federated.config import FederatedConfig
from edgeft.cores import usable_cores
from edgeft.train.rundir import RunDir


def backend_config(client_cpus: Optional[int] = None, object_store_mb: int = 256) -> dict:
    cores = usable_cores()
    per_client = max(1, min(client_cpus or cores, cores))
    return {
        "client_resources": {"num_cpus": per_client, "num_gpus": 0.0},
        "init_args": {"num_cpus": cores, "num_gpus": 0, "include_dashboard": False,
                      "object_store_memory": object_store_mb * 2**20, "logging_level": logging.ERROR},
    }


def run_federated(cfg: FederatedConfig, progress: Optional[Callable] = None, client_cpus: Optional[int] = None,
                  verbose: bool = False) -> dict:
    """Simulate `cfg.clients` SuperNodes and the ServerApp; returns the run's summary (metrics.json)."""
    from edgeft.federated.data import data_and_validation

    data_and_validation(cfg)  # a partition that cannot work fails here, in seconds, before Flower and Ray load
    cfg.method()  # and so does an unknown method option (--option) or zeroth-order base (--zo-base)
    from flwr.simulation import run_simulation

    from edgeft.federated.accounting import STOP
    from edgeft.federated.apps import build_client_app, build_server_app
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    STOP.clear()
    try:
        run_simulation(server_app=build_server_app(cfg, progress), client_app=build_client_app(cfg),
                       num_supernodes=cfg.clients, backend_config=backend_config(client_cpus),
                       verbose_logging=verbose)
    except KeyboardInterrupt:  # Ctrl-C: the ServerApp's thread stops waiting for clients (else the exit waits on it)
        STOP.set()
        raise
    finally:
        flwr_logger.setLevel(level)
    return RunDir(cfg.out).read_metrics()
