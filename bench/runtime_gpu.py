"""`hybrid` on 1 and 2 GPUs (NCCL), same code as the CPU runs: throughput per epoch.

Random-weight Llama with SmolLM2-135M's block shapes (30 blocks, hidden 576, 9 heads / 3 KV heads,
MLP 1536; a small word-level vocabulary, since the real weights do not travel to the GPU machine;
timing does not depend on weight values). No compute or link emulation: real GPUs, real NCCL.

    python3 bench/runtime_gpu.py            # on the GPU machine (see docs/benchmarks_runtime.md)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

import torch  # noqa: E402

from edgeft.runtime.run import LaunchConfig, launch  # noqa: E402

CLUSTER = """name: gpus
description: GPUs of one host as devices (NVLink-class links)
devices:
  - {name: gpu-0, compute: {flops: 5.0e13}, memory_gb: 130, link: {rate_mbps: 400000}}
  - {name: gpu-1, compute: {flops: 5.0e13}, memory_gb: 130, link: {rate_mbps: 400000}}
servers:
  - {name: host, compute: {flops: 5.0e13}, memory_gb: 200, band_mhz: 20}
"""


def main() -> None:
    import tiny

    out = Path(os.environ.get("OUT", ROOT / "runs" / "gpu-bench"))
    work = ROOT / "runs" / "gpu-bench-work"
    work.mkdir(parents=True, exist_ok=True)
    small = os.environ.get("EDGEFT_BENCH_SMOKE") == "1"  # a quick CPU check of this script
    model = tiny.make_llama(work / "llama-smollm2-shape", layers=2 if small else 30, hidden=72 if small else 576,
                            heads=9, kv_heads=3, intermediate=96 if small else 1536)
    samples = 64 if small else 4096
    (work / "gpus.yaml").write_text(CLUSTER)
    rows = []
    for method, epochs in (("pac", 2), ("lora", 1)):
        for n in (1, 2):
            if os.environ.get("EDGEFT_BENCH_ONLY") and os.environ["EDGEFT_BENCH_ONLY"] != f"{method}{n}":
                continue
            devices = [f"gpu-{i}" for i in range(n)]
            cfg = LaunchConfig(cluster=str(work / "gpus.yaml"), devices=devices, model=str(model), method=method,
                               strategy="hybrid", task={"name": "sst2", "train_samples": samples, "dev_samples": 64,
                                                        "max_length": 64, "seed": 0},
                               method_options={"r": 8} if method == "lora" else {},
                               train={"epochs": epochs, "batch_size": 16 if small else 64, "micro_batches": 4, "checkpoint_every": 1000,
                                      "lr": 1e-3},
                               out=str(work / f"{method}-{n}gpu"), link_mode="none", emulate_compute=False,
                               evaluate=False, timeout_s=120, overwrite=True)
            t0 = time.time()
            m = launch(cfg, say=print)
            for e in m["epochs"]:
                rows.append({"method": method, "gpus": n, "epoch": e["epoch"], "seconds": e["measured_s"],
                             "samples_per_s": e["samples_per_s"], "layout": m["layout"], "wall_s": time.time() - t0,
                             "peak_memory_mb": [d["peak_memory_mb"] for d in m["per_device"]],
                             "bytes_sent": [d["bytes_sent"] for d in m["per_device"]]})
                print(json.dumps(rows[-1])[:300], flush=True)
    # the same 2-GPU PAC run forced into a 2-stage pipeline (one GPU per stage), through --plan
    plan = json.loads((work / "pac-2gpu" / "plan.attempt0.json").read_text())
    half = 1 if small else 15
    plan["layout"] = {"stages": [{"blocks": [0, half], "ranks": [0], "shares": [1.0]},
                                 {"blocks": [half, 2 if small else 30], "ranks": [1], "shares": [1.0]}],
                      "micro_batches": 4, "cached_shares": {"0": 0.5, "1": 0.5}}
    (work / "pipeline-plan.json").write_text(json.dumps(plan))
    cfg = cfg.model_copy(update={"method": "pac", "method_options": {}, "plan": str(work / "pipeline-plan.json"),
                                 "devices": ["gpu-0", "gpu-1"], "out": str(work / "pac-2gpu-pipeline"),
                                 "train": cfg.train.model_copy(update={"epochs": 2})})
    m = launch(cfg, say=print)
    for e in m["epochs"]:
        rows.append({"method": "pac (2-stage pipeline)", "gpus": 2, "epoch": e["epoch"], "seconds": e["measured_s"],
                     "samples_per_s": e["samples_per_s"], "layout": m["layout"],
                     "peak_memory_mb": [d["peak_memory_mb"] for d in m["per_device"]],
                     "bytes_sent": [d["bytes_sent"] for d in m["per_device"]]})
    meta = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "gpus_visible": torch.cuda.device_count(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("| method | GPUs | epoch | s | samples/s |")
    for r in rows:
        print(f"| {r['method']} | {r['gpus']} | {r['epoch']} | {r['seconds']:.2f} | {r['samples_per_s']:.0f} |")


if __name__ == "__main__":
    main()
