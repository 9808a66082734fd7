"""Run a federated configuration on Flower's simulation engine (Ray backend) on this machine.

Every client is a virtual SuperNode whose ClientApp runs in a Ray actor process; by default one actor
gets all the CPU cores, so clients run one after another and each client's compute time is its own.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

from edgeft.federated.config import FederatedConfig
from edgeft.cores import usable_cores
from edgeft.train.rundir import OWNED, RunDir

# What a federated run writes into its folder (all `--overwrite` removes): edgeft's usual files and these two, which
# `--overwrite` left behind, so a FedIT run over a FedKSeed one kept the old seed_pool.npz (and a run that stopped
# early, the earlier run's ledger.json) beside its own files.
RUN_FILES = OWNED + ("ledger.json", "seed_pool.npz")


def backend_config(client_cpus: Optional[int] = None, object_store_mb: int = 256) -> dict:
    cores = usable_cores()
    per_client = max(1, min(client_cpus or cores, cores))
    # max_restarts/max_task_retries: Ray brings back a client actor whose process died (SIGKILL, the out-of-memory
    # killer) and runs the message it held, and those queued for it, once more on the new one. Without them the dead
    # actor stayed in Flower's pool, which serves every virtual client: every later message failed at once and the run
    # stopped at the next round. A message whose work kills its actor twice fails (a dropped client).
    return {
        "client_resources": {"num_cpus": per_client, "num_gpus": 0.0, "max_restarts": -1,
                             "max_task_retries": 1},
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


CLIENT_ACTOR = "ray::ClientAppActor"  # the process title of a Ray worker that runs Flower's ClientApps


def release_clients(finished: threading.Event, grace: float, quiet: Callable[[], None]) -> None:
    """Called when the ServerApp has ended: Flower's simulation then waits for the client work still running before it
    shuts Ray down, and a client that never returns (a stopped or hung process: SIGSTOP) kept `edgeft federate` and
    every Ray process alive for ever, after the run's files were written. Client actors still there `grace` s later,
    while the simulation has not `finished`, are killed (nobody reads their replies); Ray runs a killed actor's
    message once more on a new actor, so the kill repeats every `grace` s until the simulation ends."""
    from edgeft.processes import descendants, send_signal

    def title(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            return ""

    def watch() -> None:
        while not finished.wait(grace):
            actors = [pid for pid in descendants(os.getpid()) if title(pid).startswith(CLIENT_ACTOR)]
            if actors:
                quiet()  # their work's errors are not news: the run's results are written
                send_signal(actors, signal.SIGKILL)

    threading.Thread(target=watch, name="edgeft-release-clients", daemon=True).start()


def check_inputs(cfg: FederatedConfig) -> None:
    """What can be checked in seconds, before Flower and Ray load (and before --overwrite clears an earlier run)."""
    from edgeft.federated.data import data_and_validation

    data_and_validation(cfg)  # a partition that cannot work fails here
    cfg.method()  # and so does an unknown method option (--option) or zeroth-order base (--zo-base)


def run_federated(cfg: FederatedConfig, progress: Optional[Callable] = None, client_cpus: Optional[int] = None,
                  verbose: bool = False) -> dict:
    """Simulate `cfg.clients` SuperNodes and the ServerApp; returns the run's summary (metrics.json)."""
    check_inputs(cfg)
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
    finished = threading.Event()  # Flower's simulation has returned

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
                grace = min(max(cfg.round_timeout, 5.0), 30.0)  # a round's wait, within what Flower's exit takes
                server_app = build_server_app(cfg, progress, on_end=lambda: release_clients(
                    finished, grace, lambda: flwr_logger.setLevel(logging.CRITICAL + 1)))
                run_simulation(server_app=server_app, client_app=build_client_app(cfg),
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
        finished.set()
        if not STOP.is_set():
            flwr_logger.setLevel(level)
    return RunDir(cfg.out).read_metrics()
