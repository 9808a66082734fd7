"""`edgeft eval`, `edgeft profile` and `edgeft bench pac|quality` fed unusual inputs: each is refused by name,
before any work, instead of being ignored, ending in a traceback or losing what was measured."""

import json
import os
import re
import signal

import pytest
from typer.testing import CliRunner

from edgeft.cli.app import build_app
from edgeft.cli.bench import bench_script
from edgeft.errors import ConfigError


def _cli(*args):
    return CliRunner().invoke(build_app(), [str(a) for a in args])


@pytest.fixture(scope="module")
def lora_adapter(tiny_llama, tmp_path_factory):
    """A causal-LM LoRA adapter (LM head), from the quickest fine-tune."""
    out = tmp_path_factory.mktemp("review") / "run"
    result = _cli("finetune", "--model", tiny_llama, "--task", "sst2", "--method", "lora", "--train-samples", 8,
                  "--dev-samples", 4, "--max-length", 16, "--out", out)
    assert result.exit_code == 0, result.output
    return out / "adapter"


def test_eval_refuses_a_head_the_adapter_was_not_trained_with(tiny_llama, lora_adapter):
    """--head classifier with an LM-head adapter was silently ignored: the table showed the LM head's scores."""
    result = _cli("eval", "--model", tiny_llama, "--task", "sst2", "--adapter", lora_adapter, "--head", "classifier",
                  "--dev-samples", 4, "--max-length", 16)
    assert isinstance(result.exception, ConfigError)
    assert "--head classifier" in str(result.exception) and "causal_lm" in str(result.exception)
    same = _cli("eval", "--model", tiny_llama, "--task", "sst2", "--adapter", lora_adapter, "--head", "lm",
                "--dev-samples", 4, "--max-length", 16)
    assert same.exit_code == 0, same.output  # the adapter's own head, named: honoured


def test_eval_of_a_stopped_run_says_it_was_stopped_and_how_to_go_on(tiny_llama, tmp_path):
    """A run stopped mid-way writes no adapter: eval said 'no such adapter folder ... re-run the fine-tune', where
    --resume goes on from its checkpoint."""
    from edgeft.processes import Interrupted
    from edgeft.train.recipe import config_from_dict, run_finetune

    def stop_at_first_step(total):  # Ctrl-C as the first step ends: the run checkpoints it and stops
        sent = []

        def tick(*_, **__):
            if not sent:
                sent.append(os.kill(os.getpid(), signal.SIGINT))
        return tick

    out = tmp_path / "run"
    cfg = config_from_dict({"model": str(tiny_llama), "method": "lora", "out": str(out),
                            "task": {"name": "sst2", "train_samples": 8, "dev_samples": 4, "max_length": 16},
                            "train": {"epochs": 1, "batch_size": 4}})
    with pytest.raises(Interrupted):
        run_finetune(cfg, progress_factory=stop_at_first_step, say=lambda m: None)
    for adapter in (out / "adapter", out):
        result = _cli("eval", "--model", tiny_llama, "--task", "sst2", "--adapter", adapter)
        assert isinstance(result.exception, ConfigError)
        assert "was stopped" in str(result.exception) and "--resume" in str(result.exception)


def test_eval_names_the_dev_samples_option():
    """--dev-samples 0 was refused as 'command line: dev_samples: ...', a key the command does not have."""
    result = _cli("eval", "--model", "no-such-model", "--task", "sst2", "--dev-samples", 0)
    assert isinstance(result.exception, ConfigError) and "--dev-samples 0" in str(result.exception)


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_profile_checks_its_out_path_before_measuring(tmp_path, monkeypatch, where):
    """A folder or a file in --out's way was found only after the measurement (a traceback; the profile lost)."""
    import edgeft.measure.profile as profile

    def measured(*a, **k):
        raise AssertionError("measured before --out was checked")

    monkeypatch.setattr(profile, "profile_model", measured)
    (tmp_path / "a_file").write_text("")
    out = tmp_path if where == "folder" else tmp_path / "a_file" / "p.json"
    result = _cli("profile", "--model", "minilm-l6", "--out", out)
    assert isinstance(result.exception, ConfigError), result.exception
    assert ("names a folder" if where == "folder" else "a_file is a file") in str(result.exception)


def test_profile_names_batch_and_length_when_they_do_not_fit(tmp_path, monkeypatch):
    """A batch too large for the machine ended in the allocator's RuntimeError traceback."""
    import edgeft.measure.profile as profile

    def too_big(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 128000000000000 bytes.")

    monkeypatch.setattr(profile, "profile_model", too_big)
    result = _cli("profile", "--model", "minilm-l6", "--batch", 10**12, "--out", tmp_path / "p.json")
    assert isinstance(result.exception, ConfigError)
    assert "--batch 1000000000000" in str(result.exception) and "smaller" in str(result.exception)
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("words, said", [
    (["--lr", "lroa=1e-3"], "'lroa' is not a method"),  # was dropped silently
    (["--lr", "lora=abc"], "positive number"),  # a ValueError traceback in each variant's process
    (["--lr", "5e-4"], "write METHOD=LR"),
    (["--pac-option", "taps"], "write KEY=VALUE"),
    (["--variants", ","], "names no variant"),  # an empty report, and a PNG said written but not
    (["--dev-samples", "0"], "--dev-samples 0: must be at least 1"),  # workers scored the whole dev split
    (["--holdout", "0"], "--holdout 0: must be at least 1"),  # scored on dev, the report said so, unasked
    (["--epochs", "0"], "--epochs 0: must be at least 1"),  # a pydantic traceback in each worker
])
def test_bench_pac_refuses_bad_lists_before_running(tmp_path, capsys, words, said):
    with pytest.raises(SystemExit) as stop:
        bench_script("pac_vs_baselines").parse_args(["--out", str(tmp_path / "r.json"), *words])
    assert stop.value.code == 2 and said in capsys.readouterr().err


def test_bench_pac_checks_out_before_running(tmp_path, capsys):
    """--out naming a folder was found after every variant had run: their results were lost."""
    with pytest.raises(SystemExit):
        bench_script("pac_vs_baselines").parse_args(["--variants", "lora", "--out", str(tmp_path)])
    assert "a folder" in capsys.readouterr().err


def test_bench_pac_worker_reports_a_bad_task_without_a_traceback(tmp_path, capsys):
    """A variant's process met an unknown task as a ConfigError traceback; now its message alone."""
    with pytest.raises(SystemExit) as stop:
        bench_script("pac_vs_baselines").main(["--task", "nosuch", "--variants", "lora", "--worker", "lora",
                                               "--worker-out", str(tmp_path / "w.json")])
    assert str(stop.value).startswith("error: unknown task 'nosuch'")


@pytest.mark.parametrize("words, said", [
    (["--seeds", ""], "--seeds '' names nothing"),  # ran nothing and wrote an empty report
    (["--seeds", "0,a"], "not a whole number"),  # a ValueError traceback
    (["--methods", "lora,pca"], "unknown pca"),  # a KeyError traceback
    (["--tasks", "sst22"], "unknown task 'sst22'"),  # every run of it failed, one by one
    (["--tasks", "file:nosuch"], "unknown task 'file:nosuch'"),
    (["--lr", "pac_cache=1e-3"], "'pac_cache' is not a method"),  # dropped silently by each run
    (["--holdout", "0"], "--holdout 0: must be at least 1"),  # scored on dev, unasked
])
def test_bench_quality_refuses_bad_lists_before_running(tmp_path, capsys, words, said):
    with pytest.raises(SystemExit) as stop:
        bench_script("quality").parse_args(["--out", str(tmp_path / "q.json"), *words])
    assert stop.value.code == 2 and said in capsys.readouterr().err


def test_bench_quality_checks_its_sweep_file_before_running(tmp_path):
    """A missing --sweep file was read only for the report, after every run had failed on it: a traceback."""
    with pytest.raises(SystemExit, match="--sweep .*no_such_sweep.json: no such file"):
        bench_script("quality").main(["--models", "m", "--tasks", "sst2", "--seeds", "0", "--holdout", "4",
                                      "--sweep", str(tmp_path / "no_such_sweep.json"),
                                      "--out", str(tmp_path / "q.json")])
    assert not (tmp_path / "q_runs").exists()


@pytest.mark.parametrize("items, said", [
    ([{"label": "base", "options": {}}, {"label": "l3", "option": {"side_layers": 3}}], "keys ['option']"),
    ([{"label": "a", "options": {}}, {"label": "a", "options": {"side_layers": 3}}], "labels ['a'] given twice"),
])
def test_bench_sweep_items_are_checked_before_running(tmp_path, items, said):
    """A misspelt key of a --sweep item was dropped (PAC's defaults ran under its label) and a label given twice
    kept only its last run: both silently."""
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps(items))
    with pytest.raises(SystemExit, match=re.escape(said)):
        bench_script("quality").main(["--models", "m", "--tasks", "sst2", "--seeds", "0", "--holdout", "4",
                                      "--sweep", str(sweep), "--out", str(tmp_path / "q.json")])
    with pytest.raises(SystemExit, match=re.escape(said)):
        bench_script("pac_vs_baselines").main(["--model", "m", "--variants", "", "--sweep", str(sweep), "--in-process",
                                               "--out", str(tmp_path / "p.json")])


def test_bench_quality_pick_names_a_report_that_is_not_a_sweep(tmp_path):
    """--pick of a missing file or of a plain (not --sweep) report ended in a traceback."""
    q = bench_script("quality")
    with pytest.raises(SystemExit, match="not a readable --sweep report"):
        q.main(["--pick", str(tmp_path / "none.json")])
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"meta": {"sweep_items": None}, "table": {"m": {"sst2": {"pac:x": {"mean": 0.5}}}}}))
    with pytest.raises(SystemExit, match="not a --sweep report"):
        q.main(["--pick", str(plain)])


def test_eval_of_an_own_file_refuses_rows_of_another_shape_than_the_adapters(tiny_llama, tmp_path, capsys):
    """An adapter trained on single texts scored a file of pairs (and the reverse) without a word; a regression dev
    set of one score read Pearson 0 with no note (finetune warns of it); --max-length 0 named 'max_length'."""
    single, pairs = tmp_path / "single.csv", tmp_path / "pairs.csv"
    single.write_text("text,label\n" + "".join(f"good film {i},{'ab'[i % 2]}\n" for i in range(12)))
    pairs.write_text("text,text2,label\n" + "".join(f"good film {i},bad film,{'ab'[i % 2]}\n" for i in range(12)))
    run = tmp_path / "run"
    trained = _cli("finetune", "--model", tiny_llama, "--data-file", single, "--method", "lora", "--max-length", 16,
                   "--out", run)
    assert trained.exit_code == 0, trained.output
    result = _cli("eval", "--model", tiny_llama, "--data-file", pairs, "--adapter", run / "adapter")
    assert isinstance(result.exception, ConfigError)
    assert re.search(r"adapter was trained on single texts, but the rows of pairs are pairs of texts",
                     str(result.exception)), result.exception
    assert _cli("eval", "--model", tiny_llama, "--data-file", single, "--adapter", run / "adapter").exit_code == 0
    result = _cli("eval", "--model", tiny_llama, "--task", "sst2", "--max-length", 0)
    assert str(result.exception) == "--max-length 0: must be at least 8."

    from edgeft.data import TaskConfig
    from edgeft.train.recipe import run_eval

    flat = tmp_path / "flat.csv"
    flat.write_text("text,label\n" + "".join(f"row {i},{i % 3}.5\n" for i in range(6)) + "last,1.5\n")
    capsys.readouterr()
    run_eval(str(tiny_llama), TaskConfig(name="flat", data_file=str(flat), dev_file=str(flat), kind="regression",
                                         dev_samples=1, max_length=16), head="classifier")
    assert "Pearson and Spearman are undefined" in capsys.readouterr().err
