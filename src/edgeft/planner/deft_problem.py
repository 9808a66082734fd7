"""LoLa DEFT problem: devices train different parameter blocks at once; the round lasts as long as
the slowest device's computation plus its link time over its bandwidth share: the upload of its
block's update, and the download of the server's broadcast of all trainables (the runtime shapes each
device's downlink at the same rate x share as its uplink, so the broadcast is part of the cost the
bandwidth allocation optimises).

Depth j counts from the output: training the block at depth j needs backprop through the j-1
blocks above it, so computation and memory grow with j. This module turns a cluster + cost table
into that problem; crunch.py and dual_ascent.py solve it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeft.errors import PlanError
from edgeft.planner.cluster import ClusterSpec
from edgeft.planner.costmodel import CostTable


def group_layers(num_layers: int, num_blocks: int) -> list[tuple[int, int]]:
    """Contiguous layer ranges [start, end), listed by depth: element 0 is the block next to the output."""
    if not 1 <= num_blocks <= num_layers:
        raise PlanError(f"cannot make {num_blocks} blocks from {num_layers} layers")
    sizes = [num_layers // num_blocks + (1 if i < num_layers % num_blocks else 0) for i in range(num_blocks)]
    out, end = [], num_layers
    for size in sizes:
        out.append((end - size, end))
        end -= size
    return out


@dataclass
class DeftInstance:
    """K devices x L blocks. Times in seconds, sizes in bits/bytes, rates in bit/s."""

    names: list[str]
    compute_s: np.ndarray  # K x L: local computation when device k trains depth j
    mem_need: np.ndarray  # L: bytes to train depth j
    mem_cap: np.ndarray  # K
    upload_bits: np.ndarray  # L: the block's update
    rate: np.ndarray  # K: bit/s with the whole band
    download_bits: float = 0.0  # the server's broadcast each involved device receives per round
    blocks: list[tuple[int, int]] | None = None  # layer range of each depth
    work_flops: np.ndarray | None = None  # L
    tx_power: np.ndarray | None = None  # K, watts
    compute_power: np.ndarray | None = None  # K x L, watts while computing
    wait_s: np.ndarray | None = None  # K x L: the link's one-way latency, paid once per message of a round

    def __post_init__(self) -> None:
        self.compute_s = np.asarray(self.compute_s, float)
        self.mem_need = np.asarray(self.mem_need, float)
        self.mem_cap = np.asarray(self.mem_cap, float)
        self.upload_bits = np.asarray(self.upload_bits, float)
        self.rate = np.asarray(self.rate, float)
        K, L = self.compute_s.shape
        if np.any(self.rate <= 0):
            bad = ", ".join(f"devices[{k}]({self.names[k]}).link" for k in np.flatnonzero(self.rate <= 0))
            raise PlanError(f"{bad}: zero uplink rate, and every deft round uploads a block: give link.rate_mbps > 0 "
                            "or a channel with power > 0")

    @property
    def K(self) -> int:
        return self.compute_s.shape[0]

    @property
    def L(self) -> int:
        return self.compute_s.shape[1]

    @property
    def link_bits(self) -> np.ndarray:
        """L: bits over the device's link per round for depth j (its upload + the broadcast)."""
        return self.upload_bits + self.download_bits

    @property
    def feasible(self) -> np.ndarray:
        return self.mem_need[None, :] <= self.mem_cap[:, None]

    def latency(self, share: np.ndarray) -> np.ndarray:
        """K x L latency for bandwidth shares (share 0 with data to send = inf)."""
        share = np.asarray(share, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            comm = self.link_bits[None, :] / (share[:, None] * self.rate[:, None])
        comm = np.where(self.link_bits[None, :] == 0, 0.0, comm)
        return np.where(self.feasible, self.busy_s + comm, np.inf)

    @property
    def busy_s(self) -> np.ndarray:
        """K x L: the time a round takes on device k at depth j before its band share counts: its compute and
        its messages' latency (neither shrinks with more band)."""
        return self.compute_s if self.wait_s is None else self.compute_s + self.wait_s

    def check_feasible(self) -> None:
        """Explains a cluster that cannot host the blocks at all (before any solver runs)."""
        fits = self.feasible
        for j in range(self.L):
            if not fits[:, j].any():
                rng = f" (layers {self.blocks[j][0]}..{self.blocks[j][1] - 1})" if self.blocks else ""
                raise PlanError(
                    f"the block at depth {j + 1}{rng} needs {self.mem_need[j] / 2**30:.2f} GiB but the largest "
                    f"device has {self.mem_cap.max() / 2**30:.2f} GiB: lower the batch or sequence length, use "
                    f"lora/pac, or add a device with more memory"
                )
        if self.L > self.K:
            raise PlanError(f"{self.L} blocks but {self.K} devices: use at most {self.K} blocks")


@dataclass
class DeftSolution:
    name: str
    makespan: float
    assign: np.ndarray  # depth j -> device index
    share: np.ndarray  # K bandwidth shares (sum <= 1)
    iterations: int = 0
    history: list[float] | None = None

    def per_device(self, inst: DeftInstance) -> dict[int, dict]:
        out = {}
        for j, k in enumerate(self.assign):
            comp = float(inst.compute_s[k, j])
            bps = self.share[k] * inst.rate[k]
            up = 0.0 if inst.upload_bits[j] == 0 else float(inst.upload_bits[j] / bps)
            down = 0.0 if inst.download_bits == 0 else float(inst.download_bits / bps)
            energy = None
            if inst.compute_power is not None and inst.tx_power is not None:
                energy = float(inst.compute_power[k, j] * comp + inst.tx_power[k] * up)  # transmit power: uplink
            wait = 0.0 if inst.wait_s is None else float(inst.wait_s[k, j])
            out[int(k)] = {"depth": j + 1, "compute_s": comp, "comm_s": up + down + wait, "up_s": up, "down_s": down,
                           "energy_j": energy}
        return out


def build_deft_instance(
    cluster: ClusterSpec, table: CostTable, num_blocks: int | None = None, local_steps: int = 1,
    broadcast: bool = True,
) -> DeftInstance:
    """Computation c_j = forward of the whole model + backward from the head down to block j.

    broadcast: each round ends with the server sending every device all trainables (what the runtime
    does); False gives the paper's upload-only model."""
    L_layers = table.num_layers
    K = len(cluster.devices)
    G = num_blocks or min(L_layers, K)
    blocks = group_layers(L_layers, G)
    fwd = table.full_forward()
    work, mem, up = [], [], []
    weights = table.weight_bytes
    for j, (start, end) in enumerate(blocks):
        above = slice(end, L_layers)
        flops = fwd + table.head_bwd + table.bwd_pass[above].sum() + table.bwd_train[start:end].sum()
        saved = table.head_saved + table.act_saved[start:L_layers].sum()
        embed = table.embed_trainable if start == 0 else 0.0  # the first block's owner trains the embedding too
        state = table.trainable_state_bytes(float(table.trainable[start:end].sum()) + embed)
        work.append(flops * local_steps)
        mem.append(weights + saved + state)
        up.append((table.update_bytes(start, end) + embed * table.workload.dtype_bytes) * 8)
    work = np.array(work)
    rates = np.array([d.compute.rate() for d in cluster.devices])
    compute_s = work[None, :] / rates[:, None]
    power = []
    for d in cluster.devices:
        if d.energy.kappa is not None and d.compute.flops is None:
            f = d.compute.freq_range_hz()[1]
            # kappa f^2 per clock cycle of the device (its cores together), as the split strategy reads it: the same
            # cluster file prices a device's energy alike under every strategy (this multiplied by `cores` before)
            power.append(d.energy.kappa * f**3)
        else:
            power.append(d.energy.power_w)
    inst = DeftInstance(
        names=[d.name for d in cluster.devices],
        compute_s=compute_s,
        mem_need=np.array(mem),
        mem_cap=np.array([d.memory_gb * 2**30 for d in cluster.devices]),
        upload_bits=np.array(up),
        download_bits=table.all_trainable() * table.workload.dtype_bytes * 8 if broadcast else 0.0,
        rate=np.array([cluster.full_band_rate(d) for d in cluster.devices]),
        blocks=blocks,
        work_flops=work,
        tx_power=np.array([d.link.power_range()[1] for d in cluster.devices]),
        compute_power=np.repeat(np.array(power)[:, None], G, axis=1),
        # the runtime's links add the sender's and receiver's latency to every message (the server's is 0): the
        # upload and the broadcast each pay the device's
        wait_s=np.array([d.link.latency_ms / 1000 for d in cluster.devices])[:, None]
        * ((np.array(up) > 0).astype(float) + (1.0 if broadcast else 0.0))[None, :],
    )
    inst.check_feasible()
    return inst
