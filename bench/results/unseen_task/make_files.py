"""A task outside the quality suite, made as a user would make one: Dolly-15k's instructions labelled by their
category (8 classes: open_qa, general_qa, classification, closed_qa, brainstorming, information_extraction,
summarization, creative_writing). Rows shuffled with seed 0; 1,200 for training, the next 400 for dev.
Dolly-15k: CC BY-SA 3.0, Databricks (src/edgeft/datasets/SOURCES.md, section 4a).
python bench/results/unseen_task/make_files.py OUT_DIR"""
import json
import random
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[3] / "src/edgeft/datasets/instruct/dolly15k/public_training.jsonl"


def main(out: str) -> None:
    rows = [json.loads(line) for line in SOURCE.read_text().splitlines() if line.strip()]
    random.Random(0).shuffle(rows)
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, part in (("cat_train.jsonl", rows[:1200]), ("cat_dev.jsonl", rows[1200:1600])):
        with open(Path(out) / name, "w") as f:
            for r in part:
                f.write(json.dumps({"question": r["instruction"], "kind": r["category"]}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
