"""Run a federated configuration on Flower's simulation engine (Ray backend) on this machine.

Every client is a virtual SuperNode whose ClientApp runs in a Ray actor process; by default one actor
gets all the CPU cores, so clients run one after another and each client's compute time is its own.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
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


def shutdown_ray() -> None:
    import ray

    ray.shutdown()


CLIENT_ACTOR = "ray::ClientAppActor"  # the process title of a Ray worker that runs Flower's ClientApps


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


class Board:
    """A folder the server and the client actors of one simulation share (one machine). A client notes every message
    it starts (with its process id) and skips one whose round is over; at a round's deadline the server marks the
    unanswered messages late and kills the actor process that holds one. One actor serves the virtual clients in
    turn, so a stopped or hung client held up the clients queued behind it ('no reply' though they never started)
    and every later round; Ray restarts the killed actor (backend_config), which then skips the late messages."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def mod(self, msg, context, call_next):
        """ClientApp mod (runs in the actor): note the start, then check the mark, so that one side sees the other."""
        from edgeft.federated.apps import error_reply

        msg_id = msg.metadata.message_id
        (self.path / f"{msg_id}.started").write_text(str(os.getpid()))
        if (self.path / f"{msg_id}.late").exists():
            return error_reply(msg, "not run: the server's round deadline had passed")
        return call_next(msg, context)

    def overdue(self, pending: dict[str, int]) -> dict[str, str]:
        """Server side, at a deadline: mark `pending` late, kill the actors that started one; each message's fate."""
        for msg_id in pending:
            (self.path / f"{msg_id}.late").touch()
        fate, stuck = {}, set()
        for msg_id in pending:
            try:
                pid = int((self.path / f"{msg_id}.started").read_text())
            except (OSError, ValueError):
                fate[msg_id] = ": never started (the client processes were busy with earlier clients' work)"
                continue
            stuck.add(pid)
            fate[msg_id] = (": its client process did not return (stopped, hung or slower than --round-timeout); "
                            "killed it, Ray starts a new one for the next clients")
        self.kill(stuck)
        return fate

    @staticmethod
    def kill(pids: set[int]) -> None:
        from edgeft.processes import send_signal

        actors = [pid for pid in pids if _title(pid).startswith(CLIENT_ACTOR)]  # never a process reusing the id
        if actors:
            send_signal(actors, signal.SIGKILL)


def release_clients(finished: threading.Event, grace: float, quiet: Callable[[], None]) -> None:
    """Called when the ServerApp has ended: Flower's simulation then waits for the client work still running before it
    shuts Ray down, and a client that never returns (a stopped or hung process: SIGSTOP) kept `edgeft federate` and
    every Ray process alive for ever, after the run's files were written. Client actors still there `grace` s later,
    while the simulation has not `finished`, are killed (nobody reads their replies); Ray runs a killed actor's
    message once more on a new actor, so the kill repeats every `grace` s until the simulation ends."""
    from edgeft.processes import descendants, send_signal

    def watch() -> None:
        while not finished.wait(grace):
            actors = [pid for pid in descendants(os.getpid()) if _title(pid).startswith(CLIENT_ACTOR)]
            if actors:
                quiet()  # their work's errors are not news: the run's results are written
                send_signal(actors, signal.SIGKILL)

    threading.Thread(target=watch, name="edgeft-release-clients", daemon=True).start()


def check_inputs(cfg: FederatedConfig) -> None:
    """What can be checked in seconds, before Flower and Ray load (and before --overwrite clears an earlier run)."""
    from edgeft.federated.data import check_text_blocks, data_and_validation
    from edgeft.models.backbone import load_config

    data_and_validation(cfg)  # a partition that cannot work fails here
    cfg.method()  # and so does an unknown method option (--option) or zeroth-order base (--zo-base)
    load_config(cfg.model)  # and a model folder that is not there (it failed after Ray's start, in a half-made run)
    check_text_blocks(cfg)  # and a client's share of LM text shorter than one block


def run_federated(cfg: FederatedConfig, progress: Optional[Callable] = None, client_cpus: Optional[int] = None,
                  verbose: bool = False) -> dict:
    """Simulate `cfg.clients` SuperNodes and the ServerApp; returns the run's summary (metrics.json)."""
    check_inputs(cfg)
    from flwr.simulation import run_simulation

    from edgeft.federated.accounting import STOP, Interrupted as UserStop
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
    if not verbose:  # the raylet's own notices (a disk over 95% full, every 10 s; a retried actor's terminate)
        backend["init_args"]["log_to_driver"] = False
    board = Board(tempfile.mkdtemp(prefix="edgeft-federate-"))
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
        if stopped:  # one came while Ray started (under the first handler): this is the second, stop at once
            raise Interrupted(signum)
        stopped.append(signum)
        stop_quietly()
        print(f"{signal.Signals(signum).name}: stopping after the clients' current work; the rounds done are kept "
              "(a second signal stops at once)", file=sys.stderr, flush=True)

    try:
        with stop_on_signals(wind_down=wind_down):  # a Ctrl-C that cut ray.init short left two Ray processes running
            start_ray(backend)
        with stop_on_signals(wind_down=wind_down):  # set again: ray.init replaced the SIGTERM handler with its own
            try:
                if stopped:  # the signal came while Ray started: no round to run
                    shutdown_ray()
                else:
                    grace = min(max(cfg.round_timeout, 5.0), 30.0)  # a round's wait, within what Flower's exit takes
                    server_app = build_server_app(cfg, progress, on_end=lambda: release_clients(
                        finished, grace, lambda: flwr_logger.setLevel(logging.CRITICAL + 1)),
                        on_timeout=board.overdue)
                    run_simulation(server_app=server_app, client_app=build_client_app(cfg, board),
                                   num_supernodes=cfg.clients, backend_config=backend, verbose_logging=verbose)
            except (FederationError, UserStop):  # UserStop: the stop came before the rounds (discovery, set-up)
                if not stopped:  # else: the ServerApp's own report of the stop, said once by the caller
                    raise
        if stopped:
            raise Interrupted(stopped[0])
    except (KeyboardInterrupt, Interrupted):
        stop_quietly()
        raise
    finally:
        finished.set()
        shutil.rmtree(board.path, ignore_errors=True)
        if not STOP.is_set():
            flwr_logger.setLevel(level)
    return RunDir(cfg.out).read_metrics()
