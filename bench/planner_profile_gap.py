"""Analytic cost model vs measurement on the two real backbones (minilm-l6, smollm2-135m).
Writes bench/results/planner/profile_<model>_<method>.json and gap.json.
Run: PYTHONPATH=src .venv/bin/python bench/planner_profile_gap.py [--only smollm2-135m/full,...]
(--only measures the named cases; gap.json is rebuilt from every case's saved profile either way)
"""

import argparse
import json
import sys
from pathlib import Path

from edgeft.measure.profile import comparison, profile_model

OUT = Path(__file__).resolve().parent / "results" / "planner"
CASES = [("minilm-l6", "full"), ("minilm-l6", "lora"), ("smollm2-135m", "lora"), ("smollm2-135m", "full")]


def _path(model: str, method: str) -> Path:
    return OUT / f"profile_{model}_{method}.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated model/method cases, e.g. smollm2-135m/full")
    only = [tuple(x.split("/")) for x in ap.parse_args().only.split(",") if x]
    unknown = set(only) - set(CASES)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}; choose from {['/'.join(c) for c in CASES]}")
    OUT.mkdir(parents=True, exist_ok=True)
    for model, method in (only or CASES):
        prof = profile_model(model, method=method, batch=4, seq_len=128, reps=3)
        _path(model, method).write_text(json.dumps(prof, indent=1))
        print(model, method, "measured", file=sys.stderr, flush=True)
    gaps, missing = {}, []
    for model, method in CASES:
        if not _path(model, method).is_file():
            missing.append(f"{model}/{method}")
            continue
        prof = json.loads(_path(model, method).read_text())
        gaps[f"{model}/{method}"] = {"matmul_gflops": prof["machine"]["matmul_flops"] / 1e9,
                                     "attention": prof["attention"], **comparison(prof)}
        print(model, method, json.dumps(gaps[f"{model}/{method}"], indent=1), file=sys.stderr)
    if missing:
        gaps["missing"] = missing
    (OUT / "gap.json").write_text(json.dumps(gaps, indent=2))


if __name__ == "__main__":
    main()
