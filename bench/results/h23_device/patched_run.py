"""h23: bench/pac_vs_baselines.py with the graphed step's warm-ups changed, for one experiment (not a library option).

H23_MODE=old: as the library is. default: the warm-up steps run on the current (default) stream, no side stream.
sync: as old, with the device synchronised after every warm-up step and every capture (a race between streams
around them would go away). Written against graphs.py as it was at 4ecf78a (the mend that followed removed
CachedStep._eager, which this patches). Usage: H23_MODE=... python bench/results/h23_device/patched_run.py ARGS..."""
import os
import runpy
import sys

import torch

from edgeft.methods.pac import graphs

MODE = os.environ.get("H23_MODE", "old")
if MODE == "default":
    def _eager(self, step, loss_fn, params, max_grad_norm):
        return self._losses(step, loss_fn, params, max_grad_norm)
    graphs.CachedStep._eager = _eager
elif MODE == "sync":
    eager, capture = graphs.CachedStep._eager, graphs.CachedStep._capture

    def _eager_synced(self, *a, **k):
        torch.cuda.synchronize()
        out = eager(self, *a, **k)
        torch.cuda.synchronize()
        return out

    def _capture_synced(self, *a, **k):
        out = capture(self, *a, **k)
        torch.cuda.synchronize()
        return out
    graphs.CachedStep._eager, graphs.CachedStep._capture = _eager_synced, _capture_synced
elif MODE != "old":
    raise SystemExit(f"H23_MODE={MODE}: old, default or sync")
sys.argv = ["bench/pac_vs_baselines.py", *sys.argv[1:]]
runpy.run_path("bench/pac_vs_baselines.py", run_name="__main__")
