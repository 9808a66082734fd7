"""`edgeft launch`: plan, start one process per device (and the edge server), supervise, recover.

Local emulation: processes are started here with subprocess and meet by env:// rendezvous on this
host (optionally each in its own network namespace, see netns.py). Across real hosts the same
worker module runs under `torchrun` (see docs/runtime.md); only this supervisor is local.

Stopping: SIGTERM, SIGINT or SIGHUP raise `Interrupted` in the launcher (`processes.stop_on_signals`), so the
`finally` blocks run: every worker's process group is killed and the network namespaces deleted;
the caller writes an `interrupted` event and what metrics exist, and exits with 128 + the signal.

Recovery: when a device is lost (its process dies by a signal or its own error, or its heartbeat
goes stale), every process of the attempt is stopped, the planner re-plans on the remaining
devices, and a new attempt resumes from the last complete checkpoint (adapters + optimizer).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeft.errors import ConfigError, EdgeftError, PlanError
from edgeft.processes import STOP_SIGNALS, free_port
from edgeft.runtime import faults
from edgeft.runtime.spec import RankSpec, RunSpec
from edgeft.train.rundir import RunDir


@dataclass
class Outcome:
    status: str  # "ok" | "lost" | "error" | "over_memory"
    lost: dict = field(default_factory=dict)  # rank -> reason
    codes: dict = field(default_factory=dict)
    detail: str = ""
    culprit: str = ""  # the rank whose own error ended the attempt (status "error")


class Supervisor:
    """Starts the workers of one attempt and watches them until they finish or one is lost."""

    def __init__(self, spec: RunSpec, spec_path: Path, netns=None, python: str = sys.executable,
                 startup_grace_s: float = 180.0, stale_after_s: float | None = None, on_tick=None):
        self.spec, self.spec_path, self.netns, self.python = spec, spec_path, netns, python
        self.procs: dict[int, subprocess.Popen] = {}
        self.logs: dict[int, Path] = {}
        self.startup_grace_s = startup_grace_s
        self.stale_after_s = stale_after_s or max(5 * spec.heartbeat_s, 5.0)
        self.on_tick = on_tick
        # (rank, global step, "kill" | "stall"): the worker of that rank kills or stops itself at that step
        self.inject: tuple | None = None

    def start(self) -> None:
        run_dir = Path(self.spec.run_dir)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        hb = run_dir / "heartbeats"
        if hb.exists():
            for f in hb.glob("*.json"):
                f.unlink()
        port = free_port()
        addr = self.netns.address(0) if self.netns else "127.0.0.1"
        for rank, r in enumerate(self.spec.ranks):
            env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(self.spec.world), "LOCAL_RANK": str(rank),
                   "LOCAL_WORLD_SIZE": str(self.spec.world), "MASTER_ADDR": addr, "MASTER_PORT": str(port),
                   "OMP_NUM_THREADS": str(self.spec.threads),
                   "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", faults.LAUNCHER_ENV: str(os.getpid())}
            if self.inject and self.inject[0] == rank:
                env[faults.FAULT_ENV] = faults.fault_env(self.inject[2], self.inject[1])
            else:
                env.pop(faults.FAULT_ENV, None)
            if self.netns:
                env["GLOO_SOCKET_IFNAME"] = "eft0"
            else:
                env.setdefault("GLOO_SOCKET_IFNAME", "lo")
            cmd = [self.python, "-m", "edgeft.runtime.worker", str(self.spec_path)]
            if self.netns:
                cmd = self.netns.prefix(rank) + cmd
            log = run_dir / "logs" / f"{r.name}.attempt{self.spec.attempt}.log"
            self.logs[rank] = log
            # a stop signal is held back until the worker is in self.procs, where kill_all finds it
            held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                with open(log, "w") as fh:
                    self.procs[rank] = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                                        start_new_session=True)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        self.started = time.time()

    def kill(self, rank: int, sig=signal.SIGKILL) -> None:
        p = self.procs.get(rank)
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, sig)  # the worker's own session: it and nothing else
            except ProcessLookupError:
                pass

    def kill_all(self) -> None:
        for rank in self.procs:
            self.kill(rank)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def watch(self, poll_s: float = 0.25) -> Outcome:
        hb = Path(self.spec.run_dir) / "heartbeats"
        while True:
            codes = {r: p.poll() for r, p in self.procs.items()}
            if all(c == faults.OK for c in codes.values()):
                return Outcome("ok", codes=codes)
            failed = {r: c for r, c in codes.items() if c not in (None, faults.OK)}
            beats = faults.read_beats(hb)
            now = time.time()
            stale = {}
            for r in self.procs:
                if codes[r] is not None:
                    continue
                if r in beats:
                    if now - beats[r]["time"] > self.stale_after_s and beats[r].get("phase") != "done":
                        stale[r] = now - beats[r]["time"]
                elif now - self.started > self.startup_grace_s:
                    stale[r] = now - self.started
            if failed or stale:
                return self._classify(failed, stale)
            if self.on_tick:
                self.on_tick(beats)
            time.sleep(poll_s)

    def _classify(self, failed: dict, stale: dict) -> Outcome:
        """Tell the culprit from the peers that fail because of it, then stop everything."""
        deadline = time.time() + min(self.spec.timeout_s, 20.0)
        for r in stale:
            self.kill(r)
        while time.time() < deadline and any(p.poll() is None for r, p in self.procs.items() if r not in stale):
            time.sleep(0.2)
        codes = {r: p.poll() for r, p in self.procs.items()}
        # a rank stopped before its first beat (within startup_grace_s) is not stale yet; its peers give up on it and
        # exit as bystanders, and the earliest of them was blamed and dropped, the silent one kept for the re-plan
        beats = faults.read_beats(Path(self.spec.run_dir) / "heartbeats")
        bystanders = all(c in (None, faults.PEER_LOST) for c in codes.values())
        silent = [r for r, c in codes.items() if c is None and r not in beats and r not in stale] if bystanders else []
        # every rank that exited says a peer was lost, one of them by the group timeout, and one alone still runs and
        # beats: the others gave up waiting for it (work longer than the step-sized timeout, a hang that leaves its
        # heartbeat thread going). The bystander with the lowest rank was blamed and dropped, and the one they waited
        # for kept. With several still running (a server waiting on a slow device too) it is not known which: as before
        running = [r for r, c in codes.items() if c is None and r in beats and beats[r].get("phase") != "done"]
        waited_on = running if (bystanders and failed and len(running) == 1 and not (silent or stale)
                                and any(self._timed_out(r) for r in failed)) else []
        self.kill_all()
        lost, errors, over = {}, {}, {}
        for r, c in codes.items():
            if r in stale:
                lost[r] = f"no heartbeat for {stale[r]:.1f} s (stale after {self.stale_after_s:.0f} s)"
            elif r in silent:
                lost[r] = f"no heartbeat {time.time() - self.started:.1f} s after its start; its peers gave up on it"
            elif r in waited_on:
                beat = beats[r]
                lost[r] = (f"its peers gave up waiting for it after {self.spec.timeout_s:g} s (the group timeout) "
                           f"while it still ran (step {beat.get('step', '?')}, phase {beat.get('phase', '?')})")
            elif c is not None and c < 0:
                lost[r] = f"process killed by signal {signal.Signals(-c).name}"
            elif c == faults.OVER_MEMORY:
                over[r] = "over its memory budget"
            elif c == faults.ERROR:
                errors[r] = self.tail(r)
        if errors and not lost:
            r = next(iter(errors))
            name = self.spec.ranks[r].name
            return Outcome("error", codes=codes, detail=f"{name}: {errors[r]}", culprit=name)
        if over and not lost:
            r = next(iter(over))
            return Outcome("over_memory", codes=codes, detail=f"{self.spec.ranks[r].name}: {self.tail(r)}")
        if not lost:  # every survivor saw a peer vanish but nobody was killed: the earliest exit is the culprit
            first = min(failed, key=lambda r: r) if failed else None
            if first is not None:
                lost[first] = f"exited with code {codes[first]}"
        return Outcome("lost", lost=lost, codes=codes)

    def _timed_out(self, rank: int) -> bool:
        """Whether the rank exited as a bystander because a wait ran past the group timeout (its `peer_lost` event in
        this attempt), not because a peer's connection closed."""
        path = Path(self.spec.run_dir) / "ranks" / f"{self.spec.ranks[rank].name}.events.jsonl"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return False
        for line in reversed(lines):
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == "peer_lost" and e.get("attempt") == self.spec.attempt:
                return "timed out" in str(e.get("error", "")).lower()
        return False

    def tail(self, rank: int, n: int = 25) -> str:
        """The end of the rank's log; an empty one (a full disk takes the traceback too) is said so, with the exit
        code and the disk's free space: the launch's error read `dev-a: ` and nothing else."""
        try:
            lines = self.logs[rank].read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        if any(line.strip() for line in lines):
            return "\n".join(lines[-n:])
        code = self.procs[rank].poll() if rank in self.procs else None
        try:
            free = f"{shutil.disk_usage(self.spec.run_dir).free / 2**20:.1f} MiB free"
        except OSError as err:
            free = f"unreadable: {err}"
        return (f"exited with code {code} and left nothing in its log {self.logs.get(rank)} (the run directory's disk: "
                f"{free})")


def spec_for_attempt(base: RunSpec, plan, attempt: int, resume: bool) -> RunSpec:
    ranks = [RankSpec(**{k: v for k, v in r.items() if k in RankSpec.model_fields}) for r in plan.ranks]
    for r in ranks:
        if r.device_flops and base.host_flops:
            from edgeft.runtime.emulation import slowdown_for

            r.slowdown, r.slowdown_clamped = slowdown_for(r.device_flops, base.host_flops)
    timeout = plan.predicted.get("collective_timeout_s", base.timeout_s)  # launch.collective_timeout
    return base.model_copy(update={"ranks": ranks, "layout": plan.layout, "attempt": attempt, "resume": resume,
                                   "timeout_s": timeout})


def run_attempts(base: RunSpec, replan, run: RunDir, devices: list[str], max_attempts: int = 4,
                 netns_factory=None, on_tick=None, say=print, inject: tuple | None = None) -> dict:
    """Run, and after each lost device re-plan on the rest and resume. Returns a summary.

    Attempts are numbered on from those the run directory holds (a --resume after a stop), so each attempt's
    plan, spec, logs and epochs (run_summary's epoch table) keep their own number instead of the next launch's."""
    attempts = []
    resume = base.resume
    first = sum(1 for e in run.events() if e["event"] == "attempt_start")
    for attempt in range(first, first + max_attempts):
        plan = replan(devices)
        spec = spec_for_attempt(base, plan, attempt, resume)
        path = Path(base.run_dir) / f"spec.attempt{attempt}.json"
        spec.save(path)
        (Path(base.run_dir) / f"plan.attempt{attempt}.json").write_text(json.dumps(plan.to_dict(), indent=2,
                                                                                  default=float))
        run.event("attempt_start", attempt=attempt, devices=devices, ranks=[r.name for r in spec.ranks],
                  layout=plan.layout, predicted_epoch_s=plan.predicted.get("epoch_s"), resume=resume)
        netns = None
        sup = Supervisor(spec, path, None, on_tick=on_tick)
        try:  # from here on, whatever stops the attempt (a signal too) kills its workers and namespaces
            netns = sup.netns = netns_factory(spec) if netns_factory else None
            if netns:
                run.event("namespaces", attempt=attempt, names=list(netns.namespaces))
            if inject and attempt == first:
                sup.inject = (next((i for i, r in enumerate(spec.ranks) if r.name == inject[0]), None),
                              int(inject[1]), "kill")
                if sup.inject[0] is None:
                    raise ConfigError(f"kill_device_at_step: no device named {inject[0]!r} in the plan")
            sup.start()
            t0 = time.time()
            out = sup.watch()
        finally:
            sup.kill_all()
            if netns:
                netns.teardown()
        attempts.append({"attempt": attempt, "status": out.status, "seconds": time.time() - t0,
                         "ranks": [r.name for r in spec.ranks], "plan": plan, "spec": spec})
        if out.status == "ok":
            run.event("attempt_done", attempt=attempt, seconds=time.time() - t0)
            return {"attempts": attempts, "plan": plan, "spec": spec}
        if out.status == "error":
            run.event("error", attempt=attempt, detail=out.detail[-2000:])
            told = faults.read_user_error(Path(spec.run_dir), out.culprit, attempt) if out.culprit else None
            if told is not None:  # bad input or a refused combination met in a worker: said as the CLI says it
                raise told
            raise EdgeftError(f"run failed in attempt {attempt}: {out.detail[-1500:]}")
        if out.status == "over_memory":
            run.event("over_memory", attempt=attempt, detail=out.detail[-2000:])
            raise PlanError(f"an emulated device ran out of memory: {out.detail[-1500:]}")
        lost_names = [spec.ranks[r].name for r in out.lost]
        for r, why in out.lost.items():
            run.event("device_lost", attempt=attempt, device=spec.ranks[r].name, role=spec.ranks[r].kind,
                      reason=why, detected_after_s=time.time() - t0)
            say(f"lost {spec.ranks[r].kind} {spec.ranks[r].name}: {why}")
        if any(spec.ranks[r].kind == "server" for r in out.lost):
            raise PlanError(f"the edge server {lost_names} was lost: a {spec.strategy} run cannot go on without it")
        devices = [d for d in devices if d not in lost_names]
        if not devices:
            raise PlanError("every device was lost; nothing left to run on")
        if attempt == first + max_attempts - 1:  # no attempt left: say so, not 're-planning on ...' first
            raise EdgeftError(f"gave up after {max_attempts} attempts (the last lost {', '.join(lost_names)}); its "
                              "complete checkpoints are kept: --resume continues the run, max_attempts (a --config "
                              "file) allows more re-plans")
        run.event("replan", attempt=attempt + 1, devices=devices,
                  reason=f"lost {', '.join(lost_names)}; resuming from the last complete checkpoint")
        say(f"re-planning on {len(devices)} device(s): {', '.join(devices)}")
        resume = True
    raise AssertionError("unreachable: the last attempt returns or raises")
