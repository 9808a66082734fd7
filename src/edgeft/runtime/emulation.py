"""Device and link emulation on one host.

Device: a process keeps to its memory budget (checked against the process's measured peak) and runs
at its compute rate: every compute section is stretched by sleeping, so that its elapsed time is
`cpu_time x slowdown`, where slowdown = (host's measured effective FLOP/s) / (device FLOP/s).
CPU time, not wall time, is stretched so that other processes sharing the host's cores do not
inflate the emulated device's speed further.

Link: each device has an uplink and a downlink (the cluster's rate x its bandwidth share) and a
one-way latency. Two ways to impose them (see docs/runtime.md):
- `tc`: Linux traffic control (tbf) on veth pairs in network namespaces (netns.py) shapes the bytes
  in the kernel; this kernel has no netem, so latency is still added here, at the receiver;
- `shaper`: this module models each link as a FIFO queue and delays delivery at the receiver to
  `start + bytes/bandwidth + latency` (same clock on one host); senders never block, like a NIC.
  The queue is the path's bottleneck: the sender's uplink, or, when the receiver's downlink is
  slower (the server's unshaped uplink to a device), that downlink, so the server's messages to
  different devices cross their downlinks at the same time, as in tc mode.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from edgeft.errors import PlanError
from edgeft.train.meters import PeakMemory


class DeviceMemoryError(PlanError):
    """The emulated device's process went over its memory budget."""


@dataclass
class DeviceEmulator:
    name: str
    slowdown: float = 1.0  # >= 1: how much slower than this host the device computes
    memory_budget_mb: float | None = None
    device: str = "cpu"
    compute_s: float = 0.0  # emulated compute time so far
    host_cpu_s: float = 0.0  # what the host itself spent
    sections: list = field(default_factory=list)  # (host CPU s, emulated s) of the first sections, for diagnosis
    _memory: PeakMemory | None = None

    def start(self) -> "DeviceEmulator":
        self._memory = PeakMemory(self.device).start()
        return self

    @contextmanager
    def compute(self):
        """Wrap one compute section: it takes `slowdown` times its CPU time in wall time."""
        import torch

        if self.device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        yield
        if self.device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - w0
        # On a GPU the CPU time says nothing about the kernels: stretch the wall time there.
        base = wall if self.device != "cpu" else time.process_time() - c0
        target = base * self.slowdown
        if target > wall:
            time.sleep(target - wall)
        self.host_cpu_s += base
        self.compute_s += max(target, wall)
        if len(self.sections) < 256:
            self.sections.append((round(base, 5), round(max(target, wall), 5)))

    def peak_mb(self) -> float:
        return self._memory.peak_mb() if self._memory else 0.0

    def check_memory(self, where: str) -> float:
        """Measured peak against the budget; over it is the emulated device running out of memory."""
        peak = self.peak_mb()
        if self.memory_budget_mb is not None and peak > self.memory_budget_mb:
            raise DeviceMemoryError(
                f"device {self.name!r} used {peak:.0f} MB ({self._memory.kind}) at {where}, over its "
                f"{self.memory_budget_mb:.0f} MB budget (cluster memory_gb): give it fewer blocks, lower the "
                "batch or micro-batch size, or raise memory_gb in the cluster file.")
        return peak


@dataclass
class LinkSpecRT:
    """One device's link as the runtime sees it (bits/s; 0 = unlimited) and one-way latency."""

    up_bps: float = 0.0
    down_bps: float = 0.0
    latency_s: float = 0.0


@dataclass
class LinkModel:
    """Star network: every rank reaches the others through the access point of the edge server."""

    links: dict[int, LinkSpecRT]
    shape_bandwidth: bool = True  # False in tc mode: the kernel already enforces the rates
    clock: callable = time.time
    _free_at: dict = field(default_factory=dict)  # bottleneck link ("up" or ("down", dst)) -> free again at
    _delay_total: float = field(default=0.0)

    def path(self, src: int, dst: int) -> tuple[float, float]:
        a, b = self.links.get(src, LinkSpecRT()), self.links.get(dst, LinkSpecRT())
        rates = [r for r in (a.up_bps, b.down_bps) if r > 0]
        return (min(rates) if rates else 0.0), a.latency_s + b.latency_s

    def transmit_time(self, src: int, dst: int, nbytes: int) -> float:
        bw, lat = self.path(src, dst)
        ser = nbytes * 8 / bw if (bw > 0 and self.shape_bandwidth) else 0.0
        return ser + lat

    def departure(self, src: int, dst: int, nbytes: int) -> float:
        """Queue a message on src's uplink; returns the time it arrives at dst."""
        bw, lat = self.path(src, dst)
        up = self.links.get(src, LinkSpecRT()).up_bps
        key = "up" if (up > 0 and up <= bw) or bw == 0 else ("down", dst)
        now = self.clock()
        start = max(now, self._free_at.get(key, 0.0))
        ser = nbytes * 8 / bw if (bw > 0 and self.shape_bandwidth) else 0.0
        self._free_at[key] = start + ser
        return start + ser + lat

    def wait_until(self, t_arrive: float) -> float:
        delay = t_arrive - self.clock()
        if delay > 0:
            time.sleep(delay)
            self._delay_total += delay
            return delay
        return 0.0

    def ring_allreduce_time(self, ranks: list[int], nbytes: int) -> float:
        """Ring all-reduce over the star: 2(k-1) steps of nbytes/k through the slowest link."""
        k = len(ranks)
        if k < 2:
            return 0.0
        steps = 2 * (k - 1)
        worst = 0.0
        for i, r in enumerate(ranks):
            worst = max(worst, self.transmit_time(r, ranks[(i + 1) % k], nbytes // k))
        return steps * worst


def slowdown_for(device_flops: float, host_flops: float) -> tuple[float, bool]:
    """(slowdown >= 1, clamped?) A device faster than the host can only run at host speed."""
    s = host_flops / device_flops
    return (max(s, 1.0), s < 1.0)
