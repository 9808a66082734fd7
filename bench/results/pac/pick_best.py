"""Pick the PAC configuration with the best held-out accuracy from a sweep report; print it as bench arguments.

Only the side network's options, the tap set and the cache dtype are carried over (where the sweep kept
its cache - on disk, to reuse it across configurations - is not: the benchmark builds its own).
Ties go to the faster configuration. One argument per line (read with bash `mapfile`).
"""

import json
import sys

CARRIED = ("taps", "reduction", "width", "combine", "side_blocks", "dropout", "pool", "cache_dtype")

report = json.loads(open(sys.argv[1]).read())
swept = {k: v for k, v in report["variants"].items() if k.startswith("pac_cache:") and v.get("dev_metric") is not None}
if not swept:
    sys.exit("no configuration in the sweep has a held-out score")
best = max(swept, key=lambda k: (round(swept[k]["dev_metric"], 6), -swept[k]["train_time_s"]))
print(f"# {best}: held-out {swept[best]['dev_metric']:.4f}", file=sys.stderr)
for key in CARRIED:
    value = swept[best]["options"].get(key)
    if value is not None:
        print("--pac-option")
        print(f"{key}={json.dumps(value)}")
print("--lr")
print(f"pac={swept[best]['lr']}")
