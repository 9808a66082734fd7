"""h26: across the processes of one cell, where does each pass (g1 graphed, e1 eager) part from the first
process's? Also: the first step's loss (the fill and the tap statistics decide it). python rep_read.py RUN.json..."""
import json
import sys
from collections import defaultdict


def first_diff(a: list, b: list):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


cells = defaultdict(list)
for path in sorted(sys.argv[1:]):
    runs = {k.split(":", 1)[1]: v for k, v in json.load(open(path))["variants"].items()}
    name = path.rsplit("/", 1)[-1].removesuffix(".json")
    cells[name.rsplit("_p", 1)[0]].append((name, runs))
for cell, procs in cells.items():
    (first, ref), rest = procs[0], procs[1:]
    for label in ("g1", "e1"):
        steps = {name: first_diff(ref[label]["losses"], r[label]["losses"]) for name, r in rest}
        parted = {n: s for n, s in steps.items() if s is not None}
        metrics = sorted({round(r[label]["dev_metric"], 6) for _, r in procs})
        print(f"{cell} {label}: {len(parted)} of {len(rest)} processes part from {first}'s"
              + (f" at steps {parted}" if parted else "") + f"; dev metrics seen {metrics}")
