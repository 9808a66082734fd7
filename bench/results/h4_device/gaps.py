"""PAC's dev cells beside LoRA's from other reports: one acceptance table (gap to LoRA, tolerance) per backbone.

  python bench/results/h4_device/gaps.py OUT.json PAC_REPORT LORA_REPORT [LORA_REPORT ...]

Every report is a bench/quality.py report on dev. LoRA's cells are read from the LORA_REPORTs, in order, a later
report's cell replacing an earlier one's (so a re-run of one task, e.g. SmolLM2 file:rte, replaces the old
cell); PAC's from PAC_REPORT. Runs nothing: the table is quality.py's own summarise() over the merged runs.
"""

import importlib.util
import json
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("quality", Path(__file__).resolve().parents[2] / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)


def merged_runs(pac_report: dict, lora_reports: list[dict]) -> dict:
    raw: dict = {}
    for rep in lora_reports:
        for model, tasks in rep["runs"].items():
            for task, entries in tasks.items():
                if "lora" in entries:
                    raw.setdefault(model, {}).setdefault(task, {})["lora"] = entries["lora"]
    for model, tasks in pac_report["runs"].items():
        for task, entries in tasks.items():
            for entry, recs in entries.items():
                if entry != "lora":
                    raw.setdefault(model, {}).setdefault(task, {})[entry] = recs
    # only the tasks PAC ran on (LoRA-only cells say nothing about PAC)
    return {m: {t: e for t, e in tasks.items() if any(k != "lora" for k in e)} for m, tasks in raw.items()
            if m in pac_report["runs"]}


def main(argv: list[str]) -> None:
    out, pac_path, lora_paths = Path(argv[0]), argv[1], argv[2:]
    pac = json.loads(Path(pac_path).read_text())
    loras = [json.loads(Path(p).read_text()) for p in lora_paths]
    table = quality.summarise(merged_runs(pac, loras))
    quality.print_table(table)
    verdict = {m: {t: row.get("pac", {}).get("within_tolerance") for t, row in tasks.items()}
               for m, tasks in table.items()}
    out.write_text(json.dumps({"meta": {"pac_report": pac_path, "lora_reports": lora_paths,
                                        "pac_config": pac["meta"].get("pac_config"),
                                        "pac_epochs": pac["meta"].get("pac_epochs")},
                               "within_tolerance": verdict, "table": table}, indent=2))
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
