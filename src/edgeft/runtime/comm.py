"""Messages between ranks over torch.distributed, with per-link byte accounting and link emulation.

A message is a dict of named tensors: a small JSON header (names, shapes, dtypes, when it arrives
under emulation) then each tensor, all by point-to-point send/recv. Sends are asynchronous (isend),
so a pipeline stage never blocks on its own uplink; `flush()` waits for them.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from edgeft.runtime.emulation import LinkModel
from edgeft.runtime.group import Group

DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                              torch.bool, torch.uint8, torch.float64)}


@dataclass
class Ledger:
    """Bytes per link: this rank's uplink (sent) and downlink (received), and per peer."""

    sent: int = 0
    received: int = 0
    messages: int = 0
    to_peer: dict = field(default_factory=lambda: defaultdict(int))
    from_peer: dict = field(default_factory=lambda: defaultdict(int))
    collective: int = 0  # bytes this rank sent inside collectives (ring estimate)
    collective_in: int = 0  # bytes this rank received inside collectives
    comm_wait_s: float = 0.0  # time spent waiting for emulated links
    comm_s: float = 0.0  # time inside receives, collectives and flushes (link waits included)

    def to_dict(self, names: dict[int, str]) -> dict:
        return {"sent_bytes": self.sent + self.collective, "received_bytes": self.received + self.collective_in,
                "p2p_sent_bytes": self.sent, "p2p_received_bytes": self.received,
                "collective_bytes": self.collective, "messages": self.messages,
                "to": {names.get(k, str(k)): v for k, v in self.to_peer.items()},
                "from": {names.get(k, str(k)): v for k, v in self.from_peer.items()},
                "link_wait_s": self.comm_wait_s, "comm_s": self.comm_s}


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Comm:
    def __init__(self, group: Group, links: LinkModel | None = None):
        self.g = group
        self.links = links
        self.ledger = Ledger()
        self._pending: list = []

    # -- point to point ---------------------------------------------------------------------------
    def send(self, payload: dict[str, torch.Tensor], dst: int) -> None:
        tensors = [t.detach().contiguous().to(self.g.device) for t in payload.values()]
        size = sum(nbytes(t) for t in tensors)
        arrive = self.links.departure(self.g.rank, dst, size) if self.links else 0.0
        head = json.dumps({"k": list(payload), "s": [list(t.shape) for t in tensors],
                           "d": [str(t.dtype) for t in tensors], "a": arrive}).encode()
        head_t = torch.frombuffer(bytearray(head), dtype=torch.uint8).to(self.g.device)
        n_t = torch.tensor([head_t.numel()], dtype=torch.int64, device=self.g.device)
        for t in (n_t, head_t, *tensors):
            self._pending.append((dist.isend(t, dst), t))
        self.ledger.sent += size
        self.ledger.to_peer[dst] += size
        self.ledger.messages += 1
        if len(self._pending) > 256:
            self.flush()

    def recv(self, src: int) -> dict[str, torch.Tensor]:
        return self.recv_all([src])[src]

    def recv_all(self, srcs: list[int]) -> dict[int, dict[str, torch.Tensor]]:
        """One message from each of srcs, received side by side. A gloo p2p message moves only once its
        receive is posted, so receiving the senders one after another would make their uploads take
        turns on links the plan has them share at once."""
        dev = self.g.device
        t0 = time.perf_counter()

        def post(bufs: dict) -> None:
            for w in [dist.irecv(t, s) for s, ts in bufs.items() for t in ts]:
                w.wait()

        n_t = {s: [torch.empty(1, dtype=torch.int64, device=dev)] for s in srcs}
        post(n_t)
        head_t = {s: [torch.empty(int(n_t[s][0].item()), dtype=torch.uint8, device=dev)] for s in srcs}
        post(head_t)
        heads = {s: json.loads(bytes(head_t[s][0].cpu().tolist()).decode()) for s in srcs}
        data = {s: [torch.empty(shape, dtype=DTYPES[dtype], device=dev) for shape, dtype in zip(h["s"], h["d"])]
                for s, h in heads.items()}
        post(data)
        out = {}
        for s in srcs:
            out[s] = dict(zip(heads[s]["k"], data[s]))
            size = sum(nbytes(t) for t in data[s])
            self.ledger.received += size
            self.ledger.from_peer[s] += size
        arrive = max(h["a"] for h in heads.values())
        if self.links and arrive:
            self.ledger.comm_wait_s += self.links.wait_until(arrive)
        self.ledger.comm_s += time.perf_counter() - t0
        return out

    def flush(self) -> None:
        t0 = time.perf_counter()
        for work, _ in self._pending:
            work.wait()
        self._pending.clear()
        self.ledger.comm_s += time.perf_counter() - t0

    # -- collectives --------------------------------------------------------------------------------
    def _emulate_collective(self, ranks: list[int], size: int, pg) -> None:
        """Everyone leaves the all-reduce when the last starter's data would have crossed the links."""
        if not self.links or len(ranks) < 2:
            return
        t = torch.tensor([self.links.clock()], dtype=torch.float64, device=self.g.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=pg)
        span = self.links.ring_allreduce_time(ranks, size)
        self.ledger.comm_wait_s += self.links.wait_until(float(t.item()) + span)

    def all_reduce_(self, tensors: list[torch.Tensor], ranks: list[int], pg=None, average: bool = False,
                    wire: torch.dtype | None = None, exact: list[torch.Tensor] = ()) -> None:
        """Sum (or mean) a list of tensors in place over `ranks`, as one flat buffer.

        `wire`: the dtype the buffer crosses the links in (bf16 halves an fp32 gradient all-reduce, as DDP's
        bf16 compression hook does): the sum is taken in that dtype and comes back in the tensors' own.
        `exact`: small tensors (a loss) summed in their own dtype, priced as part of the same collective (one
        message would carry both); reduced by a second local collective only because a buffer has one dtype."""
        if len(ranks) < 2 or not (tensors or exact):
            return
        t0 = time.perf_counter()
        parts = []  # (a flat buffer in its tensors' dtype, what crosses the links (itself unless wire differs), them)
        if tensors:
            flat = torch.cat([t.reshape(-1) for t in tensors])
            parts.append((flat, flat.to(wire) if wire is not None else flat, tensors))
        if exact:
            side = torch.cat([t.reshape(-1) for t in exact])
            parts.append((side, side, exact))
        size = sum(nbytes(sent) for _, sent, _ in parts)
        self._emulate_collective(ranks, size, pg)
        for flat, sent, dst in parts:
            dist.all_reduce(sent, group=pg)
            if sent is not flat:
                flat.copy_(sent)
            if average:
                flat /= len(ranks)
            _unflatten_into(flat, dst)
        self.ledger.collective += int(2 * (len(ranks) - 1) / len(ranks) * size)
        self.ledger.collective_in += int(2 * (len(ranks) - 1) / len(ranks) * size)
        self.ledger.comm_s += time.perf_counter() - t0

    def star_broadcast_(self, tensors: list[torch.Tensor], src: int, dsts: list[int]) -> None:
        """src sends the tensors to each of dsts itself, as an edge server does over each device's
        downlink (all at once); a collective broadcast (gloo: a binomial tree) would relay through
        devices' uplinks instead."""
        if not tensors:
            return
        if self.g.rank == src:
            flat = torch.cat([t.reshape(-1) for t in tensors])
            for d in dsts:
                self.send({"flat": flat}, d)
            return
        if self.g.rank not in dsts:
            return
        _unflatten_into(self.recv(src)["flat"], tensors)

    def barrier(self, timeout_s: float | None = None) -> None:
        """Every rank meets here. `timeout_s`: how long to wait instead of the process group's timeout, which is
        sized for steps; for the ranks waiting while one does long work between steps (an evaluation). It is gloo's
        `monitored_barrier`, under NCCL on the group's gloo side group (NCCL's barrier keeps the group's timeout)."""
        t0 = time.perf_counter()
        if timeout_s is not None:
            dist.monitored_barrier(group=self.g.waits, timeout=timedelta(seconds=timeout_s), wait_all_ranks=True)
        else:
            dist.barrier()
        self.ledger.comm_s += time.perf_counter() - t0


def _unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """Copy one flat buffer back into the tensors it was concatenated from, in order."""
    i = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[i:i + n].view_as(t))
        i += n
