"""h26 follow-up: which allocations stay on the GPU after graphed PAC runs once cuBLAS's workspaces are cleared
(memprobe.py: 19 MB)? The allocator's history is recorded from the start; after two graphed runs, the model dropped
and collected and cuBLAS's workspaces cleared, every block still allocated is listed with the Python frames that
allocated it. python bench/results/h26_device/memleft.py OUT.json [eager-first]"""
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = ["tests", "tests/methods/pac", "bench/results/h23_device"]
import tiny_models  # noqa: E402
from repeat_probe import SHAPES, _run  # noqa: E402


def main(out: str, *_flags: str) -> None:
    torch.cuda.memory._record_memory_history(max_entries=500000)
    path = tiny_models.make_llama(Path(tempfile.mkdtemp()), tiny_models.task_tokenizer("sst2"),
                                  **SHAPES["smollm2"]["model"])
    first = [{"device_cache": "on", "graphs": False}] if "eager-first" in sys.argv else []  # as memprobe.py
    for options in first + [{"device_cache": "on"}] * 2:
        model, result = _run(path, options, "smollm2")
        del model, result
        gc.collect()
    torch._C._cuda_clearCublasWorkspaces()
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    left = []
    for seg in snap["segments"]:
        for blk in seg["blocks"]:
            if blk["state"] != "active_allocated":
                continue
            frames = [f"{f['filename'].split('site-packages/')[-1]}:{f['line']} {f['name']}"
                      for f in blk.get("frames", []) if f["filename"].endswith(".py")][:8]
            left.append({"bytes": blk["size"], "segment_pool": str(seg.get("segment_pool_id")),
                         "stream": seg.get("stream"), "frames": frames})
    left.sort(key=lambda b: -b["bytes"])
    report = {"mb_allocated": torch.cuda.memory_allocated() / 2**20, "blocks": len(left),
              "mb_in_blocks": sum(b["bytes"] for b in left) / 2**20, "largest": left[:25]}
    Path(out).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("mb_allocated", "blocks", "mb_in_blocks")}))
    for b in left[:12]:
        print(round(b["bytes"] / 2**20, 2), "MB", b["segment_pool"], b["stream"], " <- ".join(b["frames"][:4]))


if __name__ == "__main__":
    main(*sys.argv[1:])
