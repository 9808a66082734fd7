"""h26: what does a process keep on the GPU after its first PAC run (h25: 146 MB at the first run's start, 243 MB
from the second on, with the earlier model freed)?

The guess, written before the run: cuBLAS keeps one workspace per (handle, stream) for the life of the process,
allocated through PyTorch's caching allocator, so it counts in torch.cuda.memory_allocated. A CUDA graph is captured
on torch.cuda.graph's own capture stream; the first capture there makes cuBLAS allocate a workspace for that stream
(inside the graph's pool), and it stays after the run. torch._C._cuda_clearCublasWorkspaces() drops them.

In one process, SmolLM2-135M's shape with random weights (no download), PAC at its defaults on the device cache:
eager (graphs=false), then graphed twice, each run's model dropped and collected after it; memory_allocated is read
before each run, after each run's collection, and after clearing cuBLAS's workspaces. Run on a GPU from the repo
root: python bench/results/h26_device/memprobe.py OUT.json [tiny|smollm2]
"""
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = ["tests", "tests/methods/pac", "bench/results/h23_device"]
import tiny_models  # noqa: E402
from repeat_probe import DEVICE, SHAPES, _run  # noqa: E402
from edgeft.methods.pac import graphs  # noqa: E402


def mb() -> float:
    if DEVICE != "cuda":  # PROBE_DEVICE=cpu: a dry run of the script only
        return 0.0
    torch.cuda.synchronize()
    return round(torch.cuda.memory_allocated() / 2**20, 2)


def main(out: str, shape: str = "smollm2") -> None:
    if shape == "tiny":
        path = tiny_models.make_tiny_model(Path(tempfile.mkdtemp()), "llama")
        graphs.WARM_STEPS = 1
    else:
        path = tiny_models.make_llama(Path(tempfile.mkdtemp()), tiny_models.task_tokenizer("sst2"),
                                      **SHAPES[shape]["model"])
    torch.zeros(1, device=DEVICE)
    rows = [{"at": "process start (CUDA context made)", "mb": mb()}]
    plan = [("eager", {"device_cache": "on", "graphs": False}, False), ("graphs_1", {"device_cache": "on"}, False),
            ("graphs_2", {"device_cache": "on"}, True), ("graphs_3", {"device_cache": "on"}, False)]
    for name, options, clear_after in plan:
        model, result = _run(path, options, shape)
        step = getattr(model, "cached_step", None)
        replays = step.describe() if step is not None else None
        del model, result, step  # the step holds its graphs and their pool (the first call's version kept it: 19 MB)
        gc.collect()
        rows.append({"at": f"after {name}, model dropped and collected", "mb": mb(), "cached_step": replays})
        if clear_after and DEVICE == "cuda":
            torch._C._cuda_clearCublasWorkspaces()
            rows.append({"at": f"after {name}, cuBLAS workspaces cleared", "mb": mb()})
        print(json.dumps(rows[-1]), flush=True)
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    report = {"torch": torch.__version__, "gpu": gpu, "shape": shape, "rows": rows}
    Path(out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
