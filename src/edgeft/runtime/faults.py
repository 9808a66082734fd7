"""Failure detection: heartbeats, exit codes, and telling a lost peer from a bug.

Every worker beats (a file per rank, rewritten every `interval` s with its step); the launcher
reads them. A device is lost when its process exits by a signal or with an error of its own, or
when its heartbeat is older than the timeout (a stalled device: SIGSTOP, a hung driver). The peers
of a lost device notice it through torch.distributed (a closed socket, or the collective timeout)
and exit with PEER_LOST, so they are not mistaken for the culprit.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

OK = 0
ERROR = 1  # a bug or bad input: do not re-plan, report it
PEER_LOST = 3  # this rank is fine, one of its peers is gone
OVER_MEMORY = 4  # this emulated device went over its memory budget
LAUNCHER_LOST = 5  # the launcher that started this rank is gone (SIGKILL, out of memory): no one would read on

LAUNCHER_ENV = "EDGEFT_LAUNCHER_PID"

PEER_MARKERS = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout",
                "connection refused", "peer", "socket", "gloo", "nccl", "store", "recv", "send",
                "enforce fail", "read error", "wait timeout")


def is_peer_failure(err: BaseException) -> bool:
    """True for errors raised by torch.distributed because another rank vanished or stalled."""
    text = f"{type(err).__name__} {err}".lower()
    dist_types = ("DistBackendError", "DistNetworkError", "DistStoreError", "DistError")
    return type(err).__name__ in dist_types or (isinstance(err, RuntimeError) and
                                                any(m in text for m in PEER_MARKERS))


def write_user_error(run_dir: Path, name: str, attempt: int, err: BaseException) -> None:
    """An EdgeftError a worker met (bad input, a refused combination): its kind and message, for the launcher."""
    path = Path(run_dir) / "ranks" / f"{name}.error.json"
    path.write_text(json.dumps({"attempt": attempt, "type": type(err).__name__, "message": str(err)}))


def read_user_error(run_dir: Path, name: str, attempt: int) -> BaseException | None:
    """The error `write_user_error` left for rank `name` in this attempt (not an earlier run's in the same folder),
    rebuilt as the same edgeft error class; None if there is none."""
    from edgeft import errors

    path = Path(run_dir) / "ranks" / f"{name}.error.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("attempt") != attempt:
        return None
    kind = getattr(errors, saved.get("type", ""), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.EdgeftError)):
        kind = errors.EdgeftError
    return kind(f"{name}: {saved.get('message', '')}")


def launcher_pid() -> int | None:
    """The pid of the `edgeft launch` that started this process, while it is this process's parent; None when
    started otherwise (torchrun, by hand), where whoever started it is the one to stop it."""
    pid = os.environ.get(LAUNCHER_ENV, "")
    return int(pid) if pid.isdigit() and int(pid) == os.getppid() else None


class Heartbeat:
    """A daemon thread rewriting <dir>/<rank>.json; `update()` records progress (step, phase).

    With `parent`, each beat also checks that this process's parent is still that pid, and calls `orphaned()`
    once it is not: a launcher killed outright (SIGKILL, the kernel's out-of-memory killer) cannot stop its
    workers, which are in sessions of their own, and they would train on with no one to read their result."""

    def __init__(self, directory: Path, rank: int, name: str, interval: float = 1.0, parent: int | None = None,
                 orphaned=None):
        self.path = Path(directory) / f"{rank}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rank, self.name, self.interval = rank, name, interval
        self.parent, self.orphaned = parent, orphaned
        self.state = {"step": 0, "phase": "starting"}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="edgeft-heartbeat")

    def start(self) -> "Heartbeat":
        self._beat()
        self._thread.start()
        return self

    def update(self, **fields) -> None:
        self.state.update(fields)

    def _beat(self) -> None:
        record = {"time": time.time(), "pid": os.getpid(), "rank": self.rank, "name": self.name, **self.state}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.parent is not None and os.getppid() != self.parent and self.orphaned is not None:
                self.orphaned()  # reparented: the parent has exited
                return
            try:
                self._beat()
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()


def read_beats(directory: Path) -> dict[int, dict]:
    out = {}
    for f in Path(directory).glob("*.json"):
        try:
            rec = json.loads(f.read_text())
            out[int(rec["rank"])] = rec
        except (OSError, ValueError, KeyError):
            continue
    return out


# "<kill|stall>:<global step>": set by the supervisor for the rank a fault-injection run targets. The
# worker acts on it at that exact step, so the fault lands mid-run however fast the steps are (a
# supervisor polling heartbeats can miss a short run's step).
FAULT_ENV = "EDGEFT_FAULT"


def fault_env(kind: str, step: int) -> str:
    if kind not in ("kill", "stall"):
        raise ValueError(f"fault kind {kind!r}: use kill or stall")
    return f"{kind}:{int(step)}"


def maybe_inject_fault(global_step: int) -> None:
    """Die (SIGKILL) or hang (SIGSTOP: alive, silent, heartbeat thread included) as a real device would."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kind, step = spec.split(":")
    if global_step >= int(step):
        os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
