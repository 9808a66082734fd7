"""Messages between ranks over torch.distributed, with per-link byte accounting and link emulation.

A message is a dict of named tensors: a small JSON header (names, shapes, dtypes, when it arrives
under emulation) then each tensor, all by point-to-point send/recv. Sends are asynchronous (isend),
so a pipeline stage never blocks on its own uplink; `flush()` waits for them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

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

    def to_dict(self, names: dict[int, str]) -> dict:
        return {"sent_bytes": self.sent + self.collective, "received_bytes": self.received + self.collective_in,
                "p2p_sent_bytes": self.sent, "p2p_received_bytes": self.received,
                "collective_bytes": self.collective, "messages": self.messages,
                "to": {names.get(k, str(k)): v for k, v in self.to_peer.items()},
                "from": {names.get(k, str(k)): v for k, v in self.from_peer.items()},
                "link_wait_s": self.comm_wait_s}


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
        n_t = torch.empty(1, dtype=torch.int64, device=self.g.device)
        dist.recv(n_t, src)
        head_t = torch.empty(int(n_t.item()), dtype=torch.uint8, device=self.g.device)
        dist.recv(head_t, src)
        head = json.loads(bytes(head_t.cpu().tolist()).decode())
        out = {}
        for name, shape, dtype in zip(head["k"], head["s"], head["d"]):
            t = torch.empty(shape, dtype=DTYPES[dtype], device=self.g.device)
            dist.recv(t, src)
            out[name] = t
        size = sum(nbytes(t) for t in out.values())
        self.ledger.received += size
        self.ledger.from_peer[src] += size
        if self.links and head["a"]:
            self.ledger.comm_wait_s += self.links.wait_until(head["a"])
        return out

    def flush(self) -> None:
        for work, _ in self._pending:
            work.wait()
        self._pending.clear()

    # -- collectives --------------------------------------------------------------------------------
    def _emulate_collective(self, ranks: list[int], size: int, pg, src: int | None = None) -> None:
        """Everyone leaves the collective when the last starter's data would have crossed the links."""
        if not self.links or len(ranks) < 2:
            return
        t = torch.tensor([self.links.clock()], dtype=torch.float64, device=self.g.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=pg)
        if src is None:
            span = self.links.ring_allreduce_time(ranks, size)
        else:  # a broadcast: the source sends to every receiver, each over its own downlink
            span = max(self.links.transmit_time(src, r, size) for r in ranks if r != src)
        self.ledger.comm_wait_s += self.links.wait_until(float(t.item()) + span)

    def all_reduce_(self, tensors: list[torch.Tensor], ranks: list[int], pg=None, average: bool = False) -> None:
        """Sum (or mean) a list of tensors in place over `ranks`, as one flat buffer."""
        if len(ranks) < 2 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        size = nbytes(flat)
        self._emulate_collective(ranks, size, pg)
        dist.all_reduce(flat, group=pg)
        if average:
            flat /= len(ranks)
        self.ledger.collective += int(2 * (len(ranks) - 1) / len(ranks) * size)
        self.ledger.collective_in += int(2 * (len(ranks) - 1) / len(ranks) * size)
        i = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[i:i + n].view_as(t))
            i += n

    def broadcast_(self, tensors: list[torch.Tensor], src: int, ranks: list[int], pg=None) -> None:
        if len(ranks) < 2 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self._emulate_collective(ranks, nbytes(flat), pg, src=src)
        dist.broadcast(flat, src, group=pg)
        if self.g.rank == src:
            self.ledger.collective += nbytes(flat) * (len(ranks) - 1)
        else:
            self.ledger.collective_in += nbytes(flat)
        i = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[i:i + n].view_as(t))
            i += n

    def barrier(self) -> None:
        dist.barrier()
