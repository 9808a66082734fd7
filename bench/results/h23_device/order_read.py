"""h23: for each run of order.sh, which of its passes repeat which, and the first step where two part."""
import json
import sys

PAIRS = [("g1", "g2"), ("g2", "g3"), ("g1", "g3"), ("e1", "e2"), ("g1", "e1")]  # those present


def first_diff(a: list, b: list):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


for path in sys.argv[1:]:
    runs = {k.split(":", 1)[1]: v for k, v in json.load(open(path))["variants"].items()}
    cells = []
    for a, b in [(a, b) for a, b in PAIRS if a in runs and b in runs]:
        step = first_diff(runs[a]["losses"], runs[b]["losses"])
        cells.append(f"{a}/{b} " + ("same" if step is None else f"part at step {step}"))
    metrics = " ".join(f"{k}={v['dev_metric']:.4f}" for k, v in runs.items())
    print(f"{path.rsplit('/', 1)[-1]}: " + "; ".join(cells) + f" | {metrics}")
