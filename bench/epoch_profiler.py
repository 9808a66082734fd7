"""One training epoch under torch.profiler, for bench/pac_vs_baselines.py --profile-epoch.

Why: the end-to-end ratios say how long an epoch takes, not where a step's time goes (kernels on the device,
launches and Python on the host). torch.profiler records both; this starts it at the end of epoch K-1 (the
Trainer's per-epoch callback is the one hook the bench has) and writes two tables when epoch K ends.
"""

from __future__ import annotations

from pathlib import Path


class EpochProfiler:
    """Profiles epoch `epoch` (None: nothing) and writes its top ops to `out`."""

    def __init__(self, epoch: int | None, out: Path, device, rows: int = 30):
        self.epoch, self.out, self.device, self.rows = epoch, out, device, rows
        self._prof = None

    def at_epoch_end(self, finished: int) -> None:
        """Call with 0 before training and with each finished epoch's number."""
        if not self.epoch:
            return
        if finished == self.epoch - 1:
            import torch
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self._prof = profile(activities=acts)
            self._prof.__enter__()
        elif finished == self.epoch and self._prof is not None:
            import torch

            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self._prof.__exit__(None, None, None)
            self._write()
            self._prof = None

    def _write(self) -> None:
        avg = self._prof.key_averages()
        parts = [f"# epoch {self.epoch} under torch.profiler (its time includes the profiler's overhead)\n",
                 "## by self host (CPU) time\n", avg.table(sort_by="self_cpu_time_total", row_limit=self.rows)]
        if self.device.type == "cuda":
            parts += ["\n## by device time\n", avg.table(sort_by="self_cuda_time_total", row_limit=self.rows)]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("\n".join(parts))
        print(f"wrote {self.out}")
