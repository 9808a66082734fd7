"""The quality suite (bench/quality.py): runs PAC and LoRA through pac_vs_baselines on bundled and user-file
tasks, reports mean ± std and the gap to LoRA; the selection rule keeps the defaults unless beaten by the margin."""

import json

import pytest
from typer.testing import CliRunner

from edgeft.cli.bench import bench_script


def test_suite_on_a_bundled_and_a_user_file_task(tmp_path, tiny_bert):
    from edgeft.cli.app import build_app

    out = tmp_path / "q.json"
    result = CliRunner().invoke(build_app(), [
        "bench", "quality", "--models", str(tiny_bert), "--full-models", "", "--tasks", "sst2,file:rte",
        "--seeds", "0,1", "--methods", "lora,pac", "--train-samples", "16", "--dev-samples", "8", "--epochs", "1",
        "--pac-epochs", "2", "--batch-size", "8", "--max-length", "24", "--jobs", "2", "--threads", "1",
        "--pac-option", "width=8", "--pac-option", "norm_samples=8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["meta"]["failed"] == []
    table = report["table"][str(tiny_bert)]
    assert set(table) == {"sst2", "file:rte"}
    for row in table.values():
        assert set(row) == {"lora", "pac"} and row["lora"]["n"] == row["pac"]["n"] == 2
        assert row["pac"]["epochs"] == 2 and row["lora"]["epochs"] == 1
        gap = 100 * (row["pac"]["mean"] - row["lora"]["mean"])
        assert abs(row["pac"]["gap_to_lora_points"] - gap) < 1e-9
        assert row["pac"]["tolerance_points"] >= 2.0
    # the user-file task went through --task FILE --dev-file FILE: two files of one name in two folders
    runs = out.with_name("q_runs")
    train, dev = runs / "userdata" / "train" / "rte.jsonl", runs / "userdata" / "dev" / "rte.jsonl"
    assert train.name == dev.name and json.loads(train.read_text().splitlines()[0])["label"] in (
        "entailment", "not_entailment")
    assert out.with_suffix(".png").stat().st_size > 10_000
    # the pair file is read with --text2-column text2, so PAC's side_init=auto copies blocks there, not on SST-2
    resolved = {t: {r["side_init"] for r in report["runs"][str(tiny_bert)][t]["pac"]} for t in table}
    assert resolved == {"sst2": {"random"}, "file:rte": {"backbone"}}


def test_the_suite_on_a_users_own_files_with_and_without_a_dev_file(tmp_path, tiny_bert):
    from edgeft.data import load_task

    sst2 = load_task("sst2")
    for split, rows in (("train", sst2.train[:40]), ("dev", sst2.dev[:12])):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for ex in rows:
                f.write(json.dumps({"text": ex["text"], "label": sst2.label_names[ex["label"]]}) + "\n")
    q = bench_script("quality")
    common = ["--models", str(tiny_bert), "--full-models", "", "--seeds", "0", "--methods", "lora,pac",
              "--train-samples", "16", "--epochs", "1", "--pac-epochs", "1", "--batch-size", "8", "--max-length", "24",
              "--jobs", "2", "--threads", "1", "--pac-option", "width=8", "--pac-option", "norm_samples=8"]
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    for extra, name in (([f"--user-task=mine={train},{dev}", "--dev-samples", "8"], "dev"),
                        ([f"--user-task=mine={train}", "--holdout", "8"], "held")):
        out = tmp_path / f"{name}.json"
        q.main(common + extra + ["--out", str(out)])
        report = json.loads(out.read_text())
        assert report["meta"]["failed"] == [] and report["meta"]["tasks"] == ["user:mine"]
        row = report["table"][str(tiny_bert)]["user:mine"]
        assert set(row) == {"lora", "pac"} and row["pac"]["n"] == 1
    with pytest.raises(SystemExit):  # no dev file and no --holdout: nothing to score on
        q.parse_args(["--user-task", f"mine={train}"])
    with pytest.raises(SystemExit):
        q.parse_args(["--user-task", f"mine={tmp_path / 'missing.jsonl'}", "--holdout", "8"])


def test_a_gap_of_exactly_the_tolerance_is_within_it_despite_float_rounding():
    q = bench_script("quality")

    def rec(seed, metric):
        return {"seed": seed, "metric": metric, "metric_name": "accuracy", "train_time_s": 1.0, "epochs": 3}

    lora = [rec(0, 0.798), rec(1, 0.796), rec(2, 0.812)]  # mean 0.802, std 0.87 points: tolerance 2.0
    for pac, within in (([rec(0, 0.780), rec(1, 0.782), rec(2, 0.784)], True),   # -2.0 (a float's -2.0000000000000018)
                        ([rec(0, 0.778), rec(1, 0.782), rec(2, 0.784)], False)):  # -2.07
        cell = q.summarise({"m": {"sst2": {"lora": lora, "pac": pac}}})["m"]["sst2"]["pac"]
        assert abs(cell["gap_to_lora_points"] + 2.0) < 0.1 and cell["within_tolerance"] is within


def _sweep(scores: dict) -> dict:
    """A sweep report with two cells; scores {label: (cell1, cell2)} as fractions."""
    table = {"m": {"a": {}, "b": {}}}
    for label, (x, y) in scores.items():
        table["m"]["a"][f"pac:{label}"] = {"mean": x}
        table["m"]["b"][f"pac:{label}"] = {"mean": y}
    items = [{"label": k, "options": {"lr_probe": k}} for k in scores]
    return {"table": table, "meta": {"sweep_items": items}}


def test_the_rule_takes_the_best_mean_over_all_cells_only_past_the_margin():
    q = bench_script("quality")
    # 'one' wins cell a by far but loses on the mean over both cells; 'two' has the best mean
    choice = q.pick(_sweep({"base": (0.70, 0.60), "one": (0.90, 0.40), "two": (0.72, 0.62)}), margin=0.5)
    assert choice["best"] == "two" and choice["chosen"] == "two" and choice["options"] == {"lr_probe": "two"}
    assert abs(choice["scores"]["two"] - 67.0) < 1e-9
    # within the margin the defaults stay
    choice = q.pick(_sweep({"base": (0.70, 0.60), "two": (0.704, 0.602)}), margin=0.5)
    assert choice["best"] == "two" and choice["chosen"] == "base"


def test_a_report_is_reused_only_for_the_same_command(tmp_path):
    """A work folder holding a run of another PAC configuration must not stand in for this one (two dev
    tables of one session once came out identical that way)."""
    q = bench_script("quality")
    marker = tmp_path / "ran.txt"
    script = f"import sys; open({str(marker)!r}, 'a').write('x'); open(sys.argv[-1], 'w').write('{{}}')"
    report = tmp_path / "r.json"

    def run(argv):
        return {"name": "r", "method": "pac", "argv": argv, "report": str(report), "log": str(tmp_path / "r.log")}

    q.BENCH, saved = tmp_path / "fake.py", q.BENCH
    try:
        q.BENCH.write_text(script)
        q.execute([run(["--pac-option", "a=1", str(report)])], jobs=1)
        q.execute([run(["--pac-option", "a=1", str(report)])], jobs=1)  # the same command: reused
        assert marker.read_text() == "x"
        q.execute([run(["--pac-option", "a=2", str(report)])], jobs=1)  # another configuration: runs again
        assert marker.read_text() == "xx"
    finally:
        q.BENCH = saved


def test_a_failed_runs_log_tail_is_kept_for_the_report(tmp_path):
    q = bench_script("quality")
    log = tmp_path / "run.log"
    log.write_text("\n".join(f"line {i}" for i in range(40)) + "\nRuntimeError: the cause\n")
    tail = q.log_tail(str(log))
    assert tail.endswith("RuntimeError: the cause") and "line 26" in tail and "line 25" not in tail
    assert "not readable" in q.log_tail(str(tmp_path / "missing.log"))


def test_a_configurations_head_reaches_pacs_runs_only(tmp_path):
    """A chosen configuration may name the backbone's head (a trained classifier on a causal LM): PAC's dev runs
    must then load that head, and LoRA's must not (its baseline is the default head)."""
    q = bench_script("quality")
    cfg = tmp_path / "chosen.json"
    cfg.write_text(json.dumps({"label": "cls", "options": {}, "head": "classifier"}))
    args = q.parse_args(["--models", "smollm2-135m", "--tasks", "sst2", "--seeds", "0", "--methods", "lora,pac",
                         "--pac-config", str(cfg)])
    runs = {r["method"]: r["argv"] for r in q.plan_runs(args, tmp_path)}
    assert runs["pac"][runs["pac"].index("--head") + 1] == "classifier"
    assert "--head" not in runs["lora"]
    args = q.parse_args(["--models", "smollm2-135m", "--tasks", "sst2", "--seeds", "0", "--methods", "pac"])
    assert "--head" not in q.plan_runs(args, tmp_path)[0]["argv"]


def test_lora_options_reach_loras_runs_only(tmp_path):
    q = bench_script("quality")
    args = q.parse_args(["--models", "smollm2-135m", "--tasks", "sst2", "--seeds", "0", "--methods", "lora,pac",
                         "--lora-option", "layers=[28, 29]"])
    runs = {r["method"]: r["argv"] for r in q.plan_runs(args, tmp_path)}
    assert runs["lora"][runs["lora"].index("--lora-option") + 1] == "layers=[28, 29]"
    assert "--lora-option" not in runs["pac"]


def test_a_picked_weight_decay_reaches_pacs_runs_and_an_unknown_key_is_refused(tmp_path):
    q = bench_script("quality")
    cfg = tmp_path / "chosen.json"
    cfg.write_text(json.dumps({"chosen": "wd1", "label": "wd1", "options": {}, "weight_decay": 1.0}))
    args = q.parse_args(["--models", "smollm2-135m", "--tasks", "sst2", "--seeds", "0", "--methods", "lora,pac",
                         "--pac-config", str(cfg)])
    runs = {r["method"]: r["argv"] for r in q.plan_runs(args, tmp_path)}
    assert runs["pac"][runs["pac"].index("--weight-decay") + 1] == "1.0"
    assert "--weight-decay" not in runs["lora"]
    cfg.write_text(json.dumps({"options": {}, "weight_decy": 1.0}))
    with pytest.raises(SystemExit, match="weight_decy"):
        q.plan_runs(args, tmp_path)


def test_a_configuration_option_given_twice_is_an_error_not_the_last_one(tmp_path, capsys):
    q = bench_script("quality")
    assert q.parse_args(["--pac-config", "a.json"]).pac_config == "a.json"
    for option in ("--pac-config", "--sweep"):
        with pytest.raises(SystemExit):
            q.parse_args([option, "a.json", option, "b.json"])
        err = capsys.readouterr().err
        assert f"{option} given twice (a.json, b.json)" in err and "--sweep file" in err


def test_a_shared_fill_gives_the_same_sweep_and_fills_once_per_tap_set(tmp_path, tiny_bert):
    """--share-fill: each (task, seed) process fills PAC's cache once on disk and every configuration with the same
    taps trains on it; a configuration with other taps refills it (its key changed). The held-out metrics and final
    losses must equal a sweep that refills for every configuration, and the cache folders must be gone after."""
    q = bench_script("quality")
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps([{"label": "base", "options": {}}, {"label": "l3", "options": {"side_layers": 3}},
                                 {"label": "t1", "options": {"taps": "all"}}]))
    reports = {}
    for share in (False, True):
        out = tmp_path / f"share{share}.json"
        q.main(["--models", str(tiny_bert), "--tasks", "sst2", "--seeds", "0", "--train-samples", "16",
                "--holdout", "8", "--epochs", "2", "--batch-size", "8", "--max-length", "24", "--threads", "1",
                "--pac-option", "width=8", "--pac-option", "norm_samples=8", "--sweep", str(sweep),
                "--out", str(out)] + (["--share-fill"] if share else []))
        reports[share] = json.loads(out.read_text())
        assert reports[share]["meta"]["failed"] == [] and reports[share]["meta"]["share_fill"] is share
        assert not list(out.with_name(f"share{share}_runs").glob("*.fill"))
    cells = {s: r["runs"][str(tiny_bert)]["sst2"] for s, r in reports.items()}
    for label in ("pac:base", "pac:l3", "pac:t1"):
        assert [(x["metric"], x["final_train_loss"]) for x in cells[True][label]] == \
            [(x["metric"], x["final_train_loss"]) for x in cells[False][label]]
    # who ran the backbone in epoch 1: every configuration without sharing; with it the first and the retapped one
    run = json.loads(next(tmp_path.glob("shareTrue_runs/*__s0.json")).read_text())["variants"]
    calls = {k.split(":")[1]: v["backbone_calls_per_epoch"][0] for k, v in run.items()}
    assert calls["base"] > 0 and calls["l3"] == 0 and calls["t1"] > 0
    run = json.loads(next(tmp_path.glob("shareFalse_runs/*__s0.json")).read_text())["variants"]
    assert all(v["backbone_calls_per_epoch"][0] > 0 for v in run.values())


def test_share_fill_without_a_sweep_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        bench_script("quality").parse_args(["--share-fill"])
    assert "--share-fill shares PAC's cache fill between the configurations of a --sweep" in capsys.readouterr().err
