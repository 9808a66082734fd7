"""h25: PAC's held-out score on each warmed backbone (x100, mean ± std over train seeds), the warm model's own score,
and the warm step's time against LoRA's (seed 0, same load). Usage: warm_read.py RESULTS_DIR"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

d = Path(sys.argv[1])
LORA_H21 = {"sst2": 86.8, "rte": 60.5}  # LoRA on all 30 blocks, same rows and seeds (h21, one H100)


def variant(path: Path) -> dict:
    return next(iter(json.loads(path.read_text())["variants"].values()))


rows = defaultdict(dict)  # (task, mode) -> seed -> (pac, warm score, warm s)
for p in sorted(d.glob("*_pac.json")):
    task, seed, mode = p.name[:-len("_pac.json")].split("_", 2)
    w = json.loads((d / p.name.replace("_pac.json", "_warm.json")).read_text())
    v = variant(p)
    rows[(task, mode)][seed] = (100 * v["dev_metric"], w.get("warm_holdout_metric"), w.get("fit_s"),
                                v["train_time_s"])
lora = {p.name.split("_")[0]: variant(p) for p in d.glob("*_lora.json")}
for task in ("sst2", "rte"):
    ref = lora.get(task)
    lora_s = ref["train_time_s"] if ref else None
    print(f"{task}: LoRA all blocks (h21) {LORA_H21[task]}; this call's LoRA seed 0: "
          + (f"{100 * ref['dev_metric']:.1f} in {lora_s:.1f} s" if ref else "missing"))
    base = None
    for mode in ("copy0", "local1", "local3", "full1"):
        cells = rows.get((task, mode), {})
        if not cells:
            print(f"  {mode:7s} missing")
            continue
        pac = [c[0] for _, c in sorted(cells.items())]
        mean = statistics.mean(pac)
        std = statistics.stdev(pac) if len(pac) > 1 else 0.0
        base = mean if mode == "copy0" else base
        warm = [c[1] for c in cells.values() if c[1] is not None]
        warm_s = [c[2] for c in cells.values() if c[2] is not None]
        pac_s = statistics.mean(c[3] for c in cells.values())
        cost = (f"; warm {statistics.mean(warm_s):.1f} s" + (f" = {statistics.mean(warm_s) / lora_s:.3f} of LoRA's"
                if lora_s else "")) if warm_s else ""
        print(f"  {mode:7s} PAC {mean:5.1f} ± {std:.1f} ({', '.join(f'{x:.1f}' for x in pac)}; seeds "
              f"{','.join(sorted(cells))})"
              + (f"  vs copy {mean - base:+.1f}" if base is not None and mode != "copy0" else "")
              + f"  vs LoRA {mean - LORA_H21[task]:+.1f}"
              + (f"; warm model alone {100 * statistics.mean(warm):.1f}" if warm else "")
              + f"{cost}; PAC train {pac_s:.1f} s")
