"""The ranks that wait while one evaluates must not time out: Comm.barrier(timeout_s) outlasts the group's timeout."""

import os
import socket
import time

import pytest
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, wait_s, results) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      EDGEFT_BACKEND="gloo")
    import torch.distributed as dist

    from edgeft.runtime.comm import Comm
    from edgeft.runtime.group import init_from_env

    comm = Comm(init_from_env(timeout_s=2.0))  # a step-sized timeout
    comm.barrier()  # both are up
    try:
        if rank == 1:
            time.sleep(5.0)  # an evaluation longer than the group's timeout
        comm.barrier(timeout_s=wait_s)
        results[rank] = "met"
    except Exception as err:  # noqa: BLE001 - the test reads what each rank saw
        results[rank] = f"{type(err).__name__}: {err}"[:200]
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass


@pytest.mark.parametrize("wait_s, met", [(60.0, True), (None, False)])
def test_a_barrier_after_an_evaluation_outlasts_the_groups_timeout(wait_s, met):
    ctx = mp.get_context("spawn")
    results = ctx.Manager().dict()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, wait_s, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert (results.get(0) == "met") is met, dict(results)
