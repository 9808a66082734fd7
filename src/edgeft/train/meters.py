"""Meters the trainer, the runtime and the benchmarks share: wall time, peak memory, parameter counts."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from pathlib import Path

import torch


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return (kb or 0) / 1024


class PeakMemory:
    """Peak memory of a phase: the CUDA allocator's peak on GPU, else the process's peak RSS.

    On Linux the RSS high-water mark is reset at `start()` (write 5 to /proc/self/clear_refs), so the
    peak belongs to the phase, not to the whole process life; elsewhere ru_maxrss is used as is.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.baseline_mb = 0.0
        self.resettable = False

    def start(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.resettable = True
        except OSError:
            self.resettable = False
        self.baseline_mb = current_rss_mb()
        return self

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = _status_kb("VmHWM") if self.resettable else None
        if hwm is not None:
            return hwm / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.device.type == "cuda" else "process_peak_rss"


class Timer:
    """Wall time that waits for the GPU to finish before reading the clock."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextmanager
    def measure(self, into: list):
        t0 = self.now()
        yield
        into.append(self.now() - t0)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counting shared tensors once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
