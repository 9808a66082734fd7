"""h26: which cells of two or more quality.py reports (same tasks and seeds) differ in metric or final training loss.
python bench/results/h26_device/cells.py A.json B.json [C.json ...]"""
import json
import sys
from itertools import combinations


def cells(path: str) -> dict:
    runs = json.load(open(path))["runs"]
    return {(model, task, method, x["seed"]): (x["metric"], x["final_train_loss"])
            for model, tasks in runs.items() for task, methods in tasks.items()
            for method, xs in methods.items() for x in xs}


def main(paths: list[str]) -> None:
    reports = {p.split("/")[-1]: cells(p) for p in paths}
    for (na, a), (nb, b) in combinations(reports.items(), 2):
        diff = sorted(c for c in a if a[c] != b.get(c))
        print(f"{na} vs {nb}: {len(a)} cells, differing: {diff or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1:])
