"""Pick the PAC configuration with the best held-out accuracy from a sweep report; print it as bench arguments.

Only the side network's options, the tap set and the cache dtype are carried over (where the sweep kept
its cache - on disk, to reuse it across configurations - is not: the benchmark builds its own).
Rule (`--within 0`, run 1): the best held-out accuracy, ties to the faster configuration (per cached epoch).
Rule (`--within 0.005`, run 2, fixed before its results were seen): the fastest configuration whose
held-out accuracy is within 0.5 points of the best. One argument per line (read with bash `mapfile`).
Run 4 (fixed before its results were seen): `--within 0 --max-peak-mb 370 --max-epoch-s 3.0` - the best
held-out accuracy among the configurations whose sweep peak GPU memory is at most 370 MB and whose cached
epochs take at most 3.0 s on average (so PAC keeps its memory target, 88% below full = 380 MB, and its speed
target, 8.64x faster than LoRA's 175 s = 20 s end to end, with some margin).
"""

import json
import sys

CARRIED = ("taps", "reduction", "width", "combine", "side_blocks", "side_layers", "side_init", "heads", "dropout",
           "pool", "cache_dtype")


def flag(name, default):
    return float(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


within = flag("--within", 0.0)
max_peak, max_epoch = flag("--max-peak-mb", float("inf")), flag("--max-epoch-s", float("inf"))
report = json.loads(open(sys.argv[1]).read())
swept = {k: v for k, v in report["variants"].items() if k.startswith("pac_cache:") and v.get("dev_metric") is not None}
if not swept:
    sys.exit("no configuration in the sweep has a held-out score")


def steady(k):  # seconds per cached epoch: the first epoch also pays for building a cache the sweep may share
    t = swept[k]["epoch_times_s"]
    return sum(t[1:]) / max(len(t) - 1, 1)


swept = {k: v for k, v in swept.items() if v["peak_memory_mb"] <= max_peak and steady(k) <= max_epoch}
if not swept:
    sys.exit("no configuration in the sweep keeps within --max-peak-mb / --max-epoch-s")
top = max(v["dev_metric"] for v in swept.values())
near = [k for k in swept if swept[k]["dev_metric"] >= top - within - 1e-9]
best = max(near, key=lambda k: (round(swept[k]["dev_metric"], 6) if within == 0 else 0, -steady(k)))
print(f"# {best}: held-out {swept[best]['dev_metric']:.4f}", file=sys.stderr)
for key in CARRIED:
    value = swept[best]["options"].get(key)
    if value is not None:
        print("--pac-option")
        print(f"{key}={json.dumps(value)}")
print("--lr")
print(f"pac={swept[best]['lr']}")
