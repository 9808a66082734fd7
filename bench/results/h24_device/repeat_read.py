"""h24: within each process, do g1/g2 and e1/e2 repeat; across the processes of one cell, do their passes agree?
Prints the first step where two loss curves part."""
import json
import sys
from collections import defaultdict


def first_diff(a: list, b: list):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def said(step):
    return "same" if step is None else f"part at step {step}"


cells = defaultdict(list)
for path in sorted(sys.argv[1:]):
    runs = {k.split(":", 1)[1]: v for k, v in json.load(open(path))["variants"].items()}
    name = path.rsplit("/", 1)[-1]
    cells[name.rsplit("_p", 1)[0]].append((name, runs))
    print(f"{name}: g1/g2 {said(first_diff(runs['g1']['losses'], runs['g2']['losses']))}; e1/e2 "
          f"{said(first_diff(runs['e1']['losses'], runs['e2']['losses']))} | "
          + " ".join(f"{k}={v['dev_metric']:.4f}" for k, v in runs.items())
          + " | memory at each pass's start (MB): "  # the weak-reference fix: must not grow from g1 to e2
          + " ".join(f"{k}={v['baseline_memory_mb']:.0f}" for k, v in runs.items()))
for cell, procs in cells.items():
    (first, ref), rest = procs[0], procs[1:]
    for label in ("g1", "e1"):
        steps = [first_diff(ref[label]["losses"], r[label]["losses"]) for _, r in rest]
        parted = [s for s in steps if s is not None]
        print(f"{cell} across {len(procs)} processes, {label} vs {first}'s: {len(parted)} of {len(rest)} part"
              + (f" (steps {sorted(parted)})" if parted else ""))
