"""One device or server process: join the group, emulate the device, run this rank's strategy part.

Started by `edgeft launch` (one process per device, env:// rendezvous on this host) or by
`torchrun ... -m edgeft.runtime.worker RUN_DIR/spec.json` on each real host: same code either way.
Exit codes (faults.py) tell the launcher whether this rank failed or one of its peers did.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path


def _rank_events(run_dir: Path, name: str, attempt: int):
    path = run_dir / "ranks" / f"{name}.events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(kind: str, **fields):
        with open(path, "a") as f:
            f.write(json.dumps({"time": time.time(), "event": kind, "rank_name": name, "attempt": attempt,
                                **fields}, default=str) + "\n")

    return log


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m edgeft.runtime.worker RUN_DIR/spec.json", file=sys.stderr)
        return 2
    from edgeft.quiet import quiet_libraries

    quiet_libraries()
    import torch

    from edgeft.errors import EdgeftError
    from edgeft.runtime import faults
    from edgeft.runtime.comm import Comm
    from edgeft.runtime.emulation import DeviceEmulator, DeviceMemoryError, LinkModel, LinkSpecRT
    from edgeft.runtime.group import close, init_from_env
    from edgeft.runtime.spec import RunSpec
    from edgeft.runtime.strategies import common as C
    from edgeft.runtime.strategies import get as get_strategy
    from edgeft.runtime.strategies.loop import run as run_strategy

    spec = RunSpec.load(argv[0])
    torch.set_num_threads(spec.threads)
    run_dir = Path(spec.run_dir)
    rank_env = int(os.environ.get("RANK", "0"))
    name = spec.ranks[rank_env].name if rank_env < spec.world else f"rank{rank_env}"
    log = _rank_events(run_dir, name, spec.attempt)
    beat = None
    try:
        if int(os.environ.get("WORLD_SIZE", "0")) != spec.world:
            raise EdgeftError(f"{argv[0]} describes {spec.world} ranks but WORLD_SIZE is "
                              f"{os.environ.get('WORLD_SIZE')}: start one process per rank in the spec.")
        launcher = faults.launcher_pid()

        def orphaned() -> None:  # from the heartbeat thread: end the whole process now, its peers see it go
            log("launcher_lost", launcher_pid=launcher)
            print(f"edgeft worker {name}: the launcher (pid {launcher}) is gone: stopping", file=sys.stderr, flush=True)
            os._exit(faults.LAUNCHER_LOST)

        beat = faults.Heartbeat(run_dir / "heartbeats", rank_env, name, spec.heartbeat_s, launcher, orphaned).start()
        group = init_from_env(spec.timeout_s)
        me = spec.ranks[group.rank]
        emu = DeviceEmulator(me.name, me.slowdown, me.memory_mb, group.device.type).start()
        links = None
        if spec.link_mode != "none":
            links = LinkModel({i: LinkSpecRT(r.up_bps, r.down_bps, r.latency_s) for i, r in enumerate(spec.ranks)},
                              shape_bandwidth=spec.link_mode == "shaper")
        ctx = C.Context(spec=spec, group=group, comm=Comm(group, links), emu=emu, beat=beat, log=log)
        log("start", pid=os.getpid(), backend=group.backend, device=str(group.device), slowdown=me.slowdown,
            memory_mb=me.memory_mb, link_mode=spec.link_mode, threads=spec.threads)
        t0 = time.perf_counter()
        out = run_strategy(ctx, get_strategy(spec.strategy))
        loop = out.pop("loop")
        result = {
            "name": me.name, "rank": group.rank, "kind": me.kind, "attempt": spec.attempt, **out,
            "losses": loop.losses, "step_times_s": loop.step_times_s,
            "step_parts_s": loop.step_parts_s, "epoch_times_s": loop.epoch_times_s,
            "epochs_done": loop.epochs_done, "global_step": loop.global_step, "evals": loop.evals,
            "fill_s": loop.fill_s,
            "wall_s": time.perf_counter() - t0, "emulated_compute_s": emu.compute_s, "host_cpu_s": emu.host_cpu_s,
            "compute_sections": emu.sections,
            "slowdown": me.slowdown, "peak_memory_mb": emu.peak_mb(), "memory_budget_mb": me.memory_mb,
            "link": ctx.comm.ledger.to_dict({i: r.name for i, r in enumerate(spec.ranks)}),
        }
        path = run_dir / "ranks" / f"{me.name}.result.json"
        path.write_text(json.dumps(result, indent=2, default=float))
        log("done", seconds=result["wall_s"])
        beat.update(phase="done")
        close()
        return faults.OK
    except DeviceMemoryError as err:
        log("over_memory", error=str(err))
        print(f"edgeft worker {name}: {err}", file=sys.stderr, flush=True)
        return faults.OVER_MEMORY
    except Exception as err:  # noqa: BLE001  (classify, then report)
        peer = faults.is_peer_failure(err) and not isinstance(err, EdgeftError)
        log("peer_lost" if peer else "error", error=f"{type(err).__name__}: {err}"[:2000])
        if isinstance(err, EdgeftError):  # a problem the user can fix: the launcher words it as the CLI would
            faults.write_user_error(run_dir, name, spec.attempt, err)
        traceback.print_exc()
        sys.stderr.flush()
        return faults.PEER_LOST if peer else faults.ERROR
    finally:
        if beat:
            beat.stop()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # never hang in interpreter teardown on a broken process group
