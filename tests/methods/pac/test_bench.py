"""The PAC benchmark runs end to end on a tiny backbone and writes its JSON and PNG."""

import importlib.util
import json
from pathlib import Path

import pytest

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


def test_a_worker_gets_every_option_of_the_run():
    """Variants run in worker processes started with sys_argv_of(args): an option it forgets is silently dropped
    there (this happened to --head). Every option, set away from its default, must reach the worker."""
    bench = bench_module()
    given = ["--model", "m", "--random-llama", sorted(bench.RANDOM_LLAMAS)[0], "--task", "t.jsonl", "--dev-file",
             "d.jsonl", "--head", "classifier", "--text2-column", "b", "--train-samples", "7", "--dev-samples", "5",
             "--epochs", "3", "--batch-size", "4", "--eval-batch-size", "6", "--max-length", "20", "--seed", "2",
             "--train-seed", "3", "--variants", "lora", "--lr", "lora=0.1", "--pac-option", "width=8",
             "--lora-option", "r=2", "--taps", "all", "--eval", "each", "--holdout", "9", "--holdout-beyond", "11", "--holdout-min-words", "4", "--weight-decay", "0.1", "--threads", "1",
             "--device", "cpu", "--precision", "bf16", "--frozen-cast", "all", "--compile", "default",
             "--compile-bucket", "32", "--profile-epoch", "2", "--out", "o.json", "--label", "x", "--sweep", "s.json",
             "--keep-losses", "--deterministic"]
    args = bench.parse_args(given)
    # how this process runs, not what a variant does
    run_only = {"merge", "in_process", "no_collect", "worker", "worker_out"}
    forwarded = vars(bench.parse_args(bench.sys_argv_of(args)))
    assert {k: v for k, v in forwarded.items() if k not in run_only} == \
        {k: v for k, v in vars(args).items() if k not in run_only}
    defaults = vars(bench.parse_args([]))
    assert all(vars(args)[k] != defaults[k] for k in defaults if k not in run_only), \
        [k for k in defaults if k not in run_only and vars(args)[k] == defaults[k]]  # every option was exercised


def test_held_out_rows_can_be_shared_by_runs_of_different_sizes():
    """--holdout-beyond N draws the held-out rows from outside the first N training samples, so a run on 8 rows
    and one on 16 score on the same rows, none of which either trains on."""
    from edgeft.data import TaskConfig, load_task

    bench = bench_module()

    def rows(n, beyond=None):
        words = ["--task", "sst2", "--train-samples", str(n), "--holdout", "5", "--max-length", "32"]
        args = bench.parse_args(words + (["--holdout-beyond", str(beyond)] if beyond else []))
        task = load_task(TaskConfig(name="sst2", train_samples=n, max_length=32, seed=args.seed))
        return {e["id"] for e in task.train}, [e["id"] for e in bench.holdout_examples(task, args)]

    small_train, small_held = rows(8, beyond=16)
    large_train, large_held = rows(16)
    assert small_train < large_train  # subsets by one seed are nested
    assert small_held == large_held and not set(large_held) & large_train
    assert rows(8)[1] != large_held  # without it, the small run's rows are drawn from a different remainder


def test_held_out_rows_can_be_limited_to_long_rows():
    """--holdout-min-words W draws the held-out rows only from rows of at least W words, none trained on."""
    from edgeft.data import TaskConfig, load_task

    bench = bench_module()
    args = bench.parse_args(["--task", "sst2", "--train-samples", "8", "--holdout", "20", "--max-length", "32",
                             "--holdout-min-words", "15"])
    task = load_task(TaskConfig(name="sst2", train_samples=8, max_length=32, seed=args.seed))
    held = bench.holdout_examples(task, args)
    assert len(held) == 20 and all(bench.words_in(e) >= 15 for e in held)
    assert not {e["id"] for e in held} & {e["id"] for e in task.train}
    args.holdout_min_words = 10_000  # no row is that long: a clear error, not fewer rows
    with pytest.raises(SystemExit, match="at least 10000 words"):
        bench.holdout_examples(task, args)


def test_the_profiled_epoch_writes_its_top_ops(tmp_path):
    """--profile-epoch K runs epoch K under torch.profiler and writes its tables next to --out; other epochs and
    runs without the option write nothing."""
    bench = bench_module()
    out = tmp_path / "r.json"
    args = bench.parse_args(["--model", "smollm2-135m", "--random-llama", "tiny", "--task", "sst2",
                             "--train-samples", "32", "--epochs", "2", "--batch-size", "16", "--max-length", "32",
                             "--variants", "pac_cache", "--eval", "none", "--profile-epoch", "2", "--threads", "1",
                             "--out", str(out)])
    bench.run_variant("pac_cache", args)
    text = (tmp_path / "r.pac_cache.profile.txt").read_text()
    assert text.startswith("# epoch 2 under torch.profiler") and "Self CPU" in text and "aten::" in text
    args.profile_epoch, args.out = None, str(tmp_path / "q.json")
    bench.run_variant("pac_cache", args)
    assert not (tmp_path / "q.pac_cache.profile.txt").exists()


@pytest.mark.parametrize("epoch", ["0", "4"])
def test_a_profiled_epoch_outside_the_run_is_a_clear_error(epoch, capsys):
    with pytest.raises(SystemExit):
        bench_module().parse_args(["--epochs", "3", "--profile-epoch", epoch])
    assert f"--profile-epoch {epoch}: choose an epoch of this run, 1 to --epochs (3)" in capsys.readouterr().err
