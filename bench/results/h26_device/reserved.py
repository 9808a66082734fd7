"""h26 follow-up: how much GPU memory does a PAC process hold (reserved by PyTorch's allocator) during the cached
epochs, against what it uses (allocated)? After the streamed fill, the fill's activations are freed into the
allocator's cache and stay reserved. Variant `empty`: torch.cuda.empty_cache() right after the fill. One variant per
process: python bench/results/h26_device/reserved.py OUT.json [asis|empty]"""
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path[:0] = ["tests", "tests/methods/pac", "bench/results/h23_device"]
import tiny_models  # noqa: E402
from repeat_probe import SHAPES, _run  # noqa: E402
from edgeft.methods.pac.model import PacModel  # noqa: E402

MB = 2**20


def main(out: str, variant: str) -> None:
    path = tiny_models.make_llama(Path(tempfile.mkdtemp()), tiny_models.task_tokenizer("sst2"),
                                  **SHAPES["smollm2"]["model"])
    seen = {}
    fill = PacModel.fill_cache

    def fill_then_measure(self, *a, **k):
        got = fill(self, *a, **k)
        torch.cuda.synchronize()
        seen["fill_max_allocated_mb"] = torch.cuda.max_memory_allocated() / MB
        seen["fill_max_reserved_mb"] = torch.cuda.max_memory_reserved() / MB
        seen["reserved_after_fill_mb"] = torch.cuda.memory_reserved() / MB
        if variant == "empty":
            t = time.perf_counter()
            torch.cuda.empty_cache()
            seen["empty_cache_s"] = time.perf_counter() - t
            seen["reserved_after_empty_mb"] = torch.cuda.memory_reserved() / MB
        torch.cuda.reset_peak_memory_stats()
        return got

    PacModel.fill_cache = fill_then_measure
    model, result = _run(path, {}, "smollm2")  # PAC's defaults (device cache and step graphs on CUDA), 4 epochs
    torch.cuda.synchronize()
    seen.update(cached_max_allocated_mb=torch.cuda.max_memory_allocated() / MB,
                cached_max_reserved_mb=torch.cuda.max_memory_reserved() / MB,
                reserved_at_end_mb=torch.cuda.memory_reserved() / MB, epoch_times_s=result.epoch_times_s,
                fast_path=model.fast_path(), variant=variant, gpu=torch.cuda.get_device_name(),
                torch=torch.__version__)
    Path(out).write_text(json.dumps(seen, indent=2))
    print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in seen.items()
                      if k not in ("fast_path",)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
