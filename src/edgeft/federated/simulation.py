"""Run a federated configuration on Flower's simulation engine (Ray backend) on this machine.

Every client is a virtual SuperNode whose ClientApp runs in a Ray actor process; by default one actor
gets all the CPU cores, so clients run one after another and each client's compute time is its own.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
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


def start_ray(backend: dict) -> None:
    """Start Ray here, by Flower's own Ray backend set-up (its arguments, this interpreter's sys.path for the
    actors; no actor is made), so that the stop handlers set after it replace Ray's: its SIGTERM handler exited at
    once, leaving no record of the stop, and its C++ failure handler printed a stack dump over it. Flower's
    simulation then finds Ray running and uses it."""
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    RayBackend(backend)  # initialises Ray unless it is already running


def run_federated(cfg: FederatedConfig, progress: Optional[Callable] = None, client_cpus: Optional[int] = None,
                  verbose: bool = False) -> dict:
    """Simulate `cfg.clients` SuperNodes and the ServerApp; returns the run's summary (metrics.json)."""
    from edgeft.federated.data import data_and_validation

    data_and_validation(cfg)  # a partition that cannot work fails here, in seconds, before Flower and Ray load
    cfg.method()  # and so does an unknown method option (--option) or zeroth-order base (--zo-base)
    from flwr.simulation import run_simulation

    from edgeft.federated.accounting import STOP
    from edgeft.federated.apps import build_client_app, build_server_app
    from edgeft.federated.server import FederationError
    from edgeft.processes import Interrupted, stop_on_signals

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    STOP.clear()
    backend = backend_config(client_cpus)
    start_ray(backend)
    stopped: list[int] = []

    def stop_quietly() -> None:
        # STOP ends the ServerApp's wait for replies; the clients' work cut short is not an error to show
        STOP.set()
        flwr_logger.setLevel(logging.CRITICAL + 1)

    def wind_down(signum: int) -> None:
        # A stop signal (Ctrl-C too) ends the run from within: the ServerApp records the stop, saves the rounds
        # done and returns; Flower then lets its threads finish the client work they hold and shuts Ray down after
        # them. Raising here instead unwound Flower under its threads: Ray was shut down while they used it (their
        # errors in the log, or Ray's exit of the process with status 1).
        stopped.append(signum)
        stop_quietly()
        print(f"{signal.Signals(signum).name}: stopping after the clients' current work; the rounds done are kept "
              "(a second signal stops at once)", file=sys.stderr, flush=True)

    try:
        with stop_on_signals(wind_down=wind_down):
            try:
                run_simulation(server_app=build_server_app(cfg, progress), client_app=build_client_app(cfg),
                               num_supernodes=cfg.clients, backend_config=backend, verbose_logging=verbose)
            except FederationError:
                if not stopped:  # else: the ServerApp's own report of the stop, said once by the caller
                    raise
        if stopped:
            raise Interrupted(stopped[0])
    except (KeyboardInterrupt, Interrupted):
        stop_quietly()
        raise
    finally:
        if not STOP.is_set():
            flwr_logger.setLevel(level)
    return RunDir(cfg.out).read_metrics()
