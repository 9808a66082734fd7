"""Analytic cost model vs measurement on the two real backbones (minilm-l6, smollm2-135m).
Writes bench/results/planner/profile_<model>_<method>.json and gap.json.
Run: PYTHONPATH=src .venv/bin/python bench/planner_profile_gap.py
"""

import json
import sys
from pathlib import Path

from edgeft.planner.profile import comparison, profile_model

OUT = Path(__file__).resolve().parent / "results" / "planner"
CASES = [("minilm-l6", "full"), ("minilm-l6", "lora"), ("smollm2-135m", "lora"), ("smollm2-135m", "full")]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    gaps = {}
    for model, method in CASES:
        prof = profile_model(model, method=method, batch=4, seq_len=128, reps=3)
        (OUT / f"profile_{model}_{method}.json").write_text(json.dumps(prof, indent=1))
        gaps[f"{model}/{method}"] = {"matmul_gflops": prof["machine"]["matmul_flops"] / 1e9,
                                     "attention": prof["attention"], **comparison(prof)}
        print(model, method, json.dumps(gaps[f"{model}/{method}"], indent=1), file=sys.stderr)
    (OUT / "gap.json").write_text(json.dumps(gaps, indent=2))


if __name__ == "__main__":
    main()
