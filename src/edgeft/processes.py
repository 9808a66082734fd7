"""Process trees on this host: a free port, a process's descendants, stopping trees, a reaper, stop signals.

edgeft starts components in sessions of their own (Flower's SuperLink and SuperNodes, the launcher's workers), so a
terminal's Ctrl-C reaches the one process that stops them in order. The cost: if that process is killed outright
(SIGKILL, the kernel's out-of-memory killer, a CI job's timeout) nothing stops them. The launcher's workers notice a
lost launcher themselves (`runtime.faults.Heartbeat`); Flower's processes do not, so `Reaper` watches for them.
Linux only (/proc), as the rest of edgeft's process handling. Standard library only: the reaper starts in ~50 ms.

`stop_on_signals` turns a stop signal into `Interrupted`, so a long job (launch, federate, finetune) ends through its
`finally` blocks and can say where it stopped; with `wind_down` the first signal only asks it to stop at a safe point.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal (Ctrl-C, SIGTERM, a closed terminal) reached a long job. BaseException, like KeyboardInterrupt:
    nothing swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals(signals=STOP_SIGNALS, wind_down=None):
    """Turn the first stop signal (of those not set to be ignored) into `Interrupted`; later ones are ignored so
    the clean-up it triggers (killing workers, deleting namespaces, writing events) is not cut short.

    With `wind_down(signum)`, the first signal only calls it, for work that must end from within (its
    own threads finishing what they hold) and raise afterwards; a second one raises at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum, frame):
        if len(fired) >= (2 if wind_down else 1):
            return
        fired.append(signum)
        if wind_down is not None and len(fired) == 1:
            wind_down(signum)
            return
        raise Interrupted(signum)

    # a signal set to be ignored stays ignored: `nohup` ignores SIGHUP so that a run outlives its terminal, and a
    # non-interactive shell's background job ignores SIGINT; a handler here would undo that
    old = {s: signal.signal(s, handler) for s in signals if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state, ppid, ...), or None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks after boot): a pid and its start time name one process, where a
    pid alone may be reused by another once the first has gone."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def descendants(pid: int) -> list[int]:
    """Every process whose parent chain leads to `pid` (read from /proc; Flower's SuperExec detaches itself
    into a session of its own, so a process group would miss it)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and len(fields) > 1 and fields[1].isdigit():
                parents[int(entry.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's process holds the pid now
        return False
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"  # a zombie is gone for our purposes


def send_signal(pids: list[int], sig: int) -> None:
    """`sig` to each of `pids`, skipping those already gone."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(procs: list[subprocess.Popen], timeout: float) -> None:
    """Wait up to `timeout` s for the first of `procs` still running (only sleep if none is: descendants remain)."""
    running = [p for p in procs if p.poll() is None]
    if not running:
        time.sleep(timeout)
        return
    try:
        running[0].wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def stop_pids(pids: list[int], grace: float = 10.0, procs: list[subprocess.Popen] = ()) -> None:
    """SIGTERM `pids`, wait up to `grace` s for them to go, then SIGKILL what is left; `procs`: the Popen objects
    among them, waited for so that they leave no zombies."""
    send_signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        _reap(list(procs), 0.2)
    send_signal([pid for pid in pids if alive(pid)], signal.SIGKILL)
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def stop_trees(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """Stop several processes and every descendant at once: their shutdowns overlap (a SuperNode takes about a
    second to sign off from its SuperLink), so stopping n of them takes one grace period at most, not n."""
    stop_pids([pid for proc in procs for pid in descendants(proc.pid) + [proc.pid]], grace, procs)


def stop_tree(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM a process and every descendant, wait up to `grace` s, then SIGKILL what is left."""
    stop_trees([proc], grace)


class Reaper:
    """A small watcher process that stops the process trees it was told of if this process dies without saying
    `close()` first. It learns of this process's death by its stdin reaching end of file: the kernel closes the
    pipe's write end whatever killed us. `close()` says that the trees were stopped (or are to live on), so a pid
    reused later is never signalled; the watcher also checks each pid's start time before signalling it.

    reaper = Reaper(); proc = subprocess.Popen(..., start_new_session=True); reaper.watch(proc.pid); ...; reaper.close()
    """

    DONE = "done"

    def __init__(self, grace: float = 10.0):
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeft.processes", str(grace)], stdin=subprocess.PIPE,
                                     text=True, start_new_session=True)

    def watch(self, pid: int) -> None:
        self.proc.stdin.write(f"{pid} {start_time(pid)}\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin.closed:
            return
        try:
            self.proc.stdin.write(self.DONE + "\n")
            self.proc.stdin.close()
        except BrokenPipeError:  # the watcher itself was killed: nothing to tell it
            pass
        self.proc.wait(timeout=10)


def _watch(stdin, grace: float) -> None:
    """The reaper's side: collect `pid start` lines until `done` (leave them) or end of file (stop them)."""
    watched: list[tuple[int, int]] = []
    for line in stdin:
        if line.strip() == Reaper.DONE:
            return
        pid, started = line.split()
        if started.isdigit():
            watched.append((int(pid), int(started)))
    roots = [pid for pid, started in watched if start_time(pid) == started]
    stop_pids([p for root in roots for p in descendants(root) + [root]], grace)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the parent; it stops its trees itself
    _watch(sys.stdin, float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
