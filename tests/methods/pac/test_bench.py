"""The PAC benchmark runs end to end on a tiny backbone and writes its JSON and PNG."""

import importlib.util
import json
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[3]


def bench_module():
    spec = importlib.util.spec_from_file_location("pac_bench", ROOT / "bench" / "pac_vs_baselines.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_in_process_records_every_variant(tmp_path, tiny_llama):
    out = tmp_path / "r.json"
    bench_module().main(["--model", str(tiny_llama), "--train-samples", "24", "--dev-samples", "8", "--epochs", "2",
                         "--batch-size", "8", "--max-length", "16", "--in-process", "--out", str(out),
                         "--lr", "pac=0.01"])
    report = json.loads(out.read_text())
    res = report["variants"]
    assert set(res) == {"full", "lora", "pac_nocache", "pac_cache"}
    for r in res.values():
        assert len(r["epoch_times_s"]) == 2 and len(r["epoch_peak_memory_mb"]) == 2
        assert r["peak_memory_mb"] > 0 and r["trainable_params"] > 0 and r["dev_metric"] is not None
    assert res["full"]["trainable_params"] == res["full"]["total_params"]
    assert res["pac_cache"]["backbone_calls_per_epoch"][1] == 0
    assert res["pac_nocache"]["backbone_calls_per_epoch"][1] > 0
    assert res["pac_cache"]["cache"]["entries"] == 24 + 8  # training samples + dev samples (cache_eval)
    assert {"speedup_pac_cache_vs_lora", "memory_reduction_pac_cache_vs_full"} <= set(report["summary"])
    assert out.with_suffix(".png").stat().st_size > 10_000
    merged = tmp_path / "merged.json"
    bench_module().main(["--merge", f"{out}::full,lora", f"{out}:again:pac_cache", "--out", str(merged)])
    m = json.loads(merged.read_text())
    assert set(m["variants"]) == {"full", "lora", "pac_cache@again"} and len(m["meta"]["merged_from"]) == 2


def test_edgeft_bench_pac_command_runs_variants_in_worker_processes(tmp_path, tiny_bert):
    from edgeft.cli.app import build_app

    out = tmp_path / "cli.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "pac", "--model", str(tiny_bert), "--train-samples", "16", "--dev-samples", "8", "--epochs", "2",
        "--batch-size", "8", "--max-length", "16", "--variants", "pac_cache", "--taps", "every:2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())["variants"]["pac_cache"]
    assert r["taps"] == [1, 3] and r["positions"] == "all" and r["backbone_calls_per_epoch"][1] == 0
    assert r["options"]["heads"] == 4 and r["cache"]["dtype"] == "int8"  # the tuned defaults
