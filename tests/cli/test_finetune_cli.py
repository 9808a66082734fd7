import json
import os
import subprocess
import sys

import pytest

EDGEFT = [sys.executable, "-m", "edgeft.cli"]


def run_cli(*args, cwd=None, env_offline=False):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"} if env_offline else None
    return subprocess.run([*EDGEFT, *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env)


def test_config_file_with_unknown_key_is_a_clean_error(tmp_path):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("model: smollm2-135m\ntask: sst2\nmethd: lora\n")
    proc = run_cli("finetune", "--config", str(cfg))
    assert proc.returncode == 2
    assert "methd: unknown key" in proc.stderr and "Traceback" not in proc.stderr


def test_malformed_user_file_is_a_clean_error(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"text": "ok", "label": "a"}\n{"text": "broken"\n')
    proc = run_cli("finetune", "--model", "minilm-l6", "--data-file", str(data), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "mine.jsonl:2" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_model_is_a_clean_error(tmp_path):
    proc = run_cli("eval", "--model", "no-such-model-xyz", "--task", "sst2", env_offline=True)
    assert proc.returncode == 2 and "unknown model 'no-such-model-xyz'" in proc.stderr


@pytest.mark.slow
def test_finetune_then_eval_with_the_adapter_on_a_real_encoder(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("finetune", "--model", "minilm-l6", "--task", "sst2", "--method", "lora", "--train-samples", "64",
                   "--dev-samples", "64", "--epochs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dev_metric_before"] is not None and metrics["dev_metric"] is not None
    proc = run_cli("eval", "--model", "minilm-l6", "--task", "sst2", "--adapter", str(out / "adapter"),
                   "--dev-samples", "64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = [line for line in proc.stdout.splitlines() if "accuracy" in line][0]
    assert f"{metrics['dev_metric']:.4f}" in shown


def _invoke(*args):
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    result = CliRunner().invoke(build_app(), [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def test_eval_scores_all_of_a_users_file_with_its_own_columns(tiny_llama, tiny_bert, tmp_path):
    notes = tmp_path / "notes.jsonl"
    rows = [{"question": f"what is film {i}", "answer": f"the film {i} is good"} for i in range(7)]
    notes.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _invoke("eval", "--model", tiny_llama, "--data-file", notes, "--instruction-column", "question",
                  "--response-column", "answer", "--max-new-tokens", "4")
    assert "notes dev (7 examples)" in out  # every row, not a seeded 10%
    assert "rougeL" in out and "sample generations" in out and "the film 0 is good" in out
    out = _invoke("eval", "--model", tiny_llama, "--task", notes, "--instruction-column", "question",
                  "--response-column", "answer", "--max-new-tokens", "4")
    assert "notes dev (7 examples)" in out  # a file given as --task is scored whole as well

    mails = tmp_path / "mails.csv"
    mails.write_text("body,folder\n" + "".join(f"this film is {w},{w}\n" for w in ["good", "bad"] * 4))
    dev = tmp_path / "mails_dev.csv"
    dev.write_text("body,folder\nthe story is good,good\nthe story is bad,bad\nawful,bad\n")
    out = _invoke("eval", "--model", tiny_bert, "--data-file", mails, "--dev-file", dev, "--text-column", "body",
                  "--label-column", "folder")
    assert "mails dev (3 examples)" in out and "accuracy" in out


def test_config_files_take_the_flat_keys_of_the_cli_and_name_an_unknown_one(tmp_path):
    from pathlib import Path

    from edgeft.errors import ConfigError
    from edgeft.train.recipe import FinetuneConfig, config_from_dict, nest_flat_keys

    example = Path(__file__).parents[2] / "examples" / "configs" / "lora-sst2.yaml"
    flat = FinetuneConfig.load(example)
    assert (flat.task.name, flat.task.train_samples, flat.train.epochs, flat.train.lr) == ("sst2", 2000, 2, 5e-4)
    assert flat.task.seed == flat.train.seed == 0 and flat.method_options == {"r": 8, "alpha": 16}
    nested = {"model": "minilm-l6", "task": {"name": "sst2", "train_samples": 2000, "seed": 0}, "method": "lora",
              "method_options": {"r": 8, "alpha": 16}, "train": {"epochs": 2, "batch_size": 16, "lr": 5e-4, "seed": 0},
              "out": "runs/lora-sst2"}
    assert config_from_dict(nest_flat_keys(nested)) == flat
    mine = config_from_dict(nest_flat_keys({"data_file": "n.jsonl", "task_kind": "generation", "epochs": 3}))
    assert (mine.task.name, mine.task.kind, mine.train.epochs) == ("n.jsonl", "generation", 3)
    with pytest.raises(ConfigError, match="my.yaml: epoch: unknown key"):
        nest_flat_keys({"task": "sst2", "epoch": 2}, "my.yaml")
    with pytest.raises(ConfigError, match="epochs is given twice"):
        nest_flat_keys({"task": "sst2", "epochs": 2, "train": {"epochs": 3}}, "my.yaml")


def test_methods_lists_every_registered_method_with_its_options(tmp_path):
    from pydantic import Field

    from edgeft.methods.base import METHODS, Method, MethodOptions, register_method

    class ProbeOptions(MethodOptions):
        depth: int = Field(7, description="how deep the probe goes")

    @register_method
    class Probe(Method):
        """A method registered by this test only."""

        name = "probe-test"
        Options = ProbeOptions

    try:
        out = _invoke("methods")
    finally:
        del METHODS["probe-test"]
    assert all(f"{name}:" in out for name in METHODS)
    assert "probe-test: A method registered by this test only." in out
    assert any(line.split("│")[0].strip() == "depth" and "7" in line and "how deep the probe goes" in line
               for line in out.splitlines())
    assert any(line.split("│")[0].strip() == "r" and "8" in line for line in out.splitlines())  # lora's rank


def test_a_normal_finetune_writes_no_warnings(tiny_llama, tmp_path):
    proc = run_cli("finetune", "--model", str(tiny_llama), "--task", "sst2", "--method", "lora", "--train-samples", "16",
                   "--dev-samples", "8", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""  # no FutureWarning, load bar or deprecation notice from the libraries
    assert "dev accuracy after" in proc.stdout


def test_library_notices_are_silenced_by_name(monkeypatch):
    import logging
    import warnings

    from edgeft.quiet import quiet_libraries

    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn_explicit("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                               "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("Tip: In future versions of Ray ...", FutureWarning, "worker.py", 1,
                               module="ray._private.worker")
        warnings.warn_explicit("something else changes", FutureWarning, "x.py", 1, module="mylib")
    assert [str(w.message) for w in seen] == ["something else changes"]  # only the named ones go
    assert "ignore:Tip:FutureWarning" in __import__("os").environ["PYTHONWARNINGS"]
    record = logging.LogRecord("flwr", logging.WARNING, "", 0, "DEPRECATED FEATURE: The `run_simulation` function "
                               "is deprecated and will be removed", None, None)
    assert not logging.getLogger("flwr").filter(record)


def test_piped_help_is_not_cut_to_80_columns_and_points_at_methods():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    proc = subprocess.run([*EDGEFT, "finetune", "--help"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert any("--instruction-column" in line and "instruction column (generation; default instruction)" in line
               for line in lines)
    assert any("(see `edgeft methods`)" in line for line in lines)


def test_eval_reads_a_users_file_through_the_adapters_own_prompt(tiny_llama, tmp_path):
    """An adapter trained with --prompt-template/--label-words learned to read those words; `edgeft eval` on a
    file of the user's takes them from the adapter unless given, and so scores what finetune scored."""
    from edgeft.train.recipe import eval_task_config

    train, dev = tmp_path / "reviews.csv", tmp_path / "reviews_dev.csv"
    lines = [f"this film is {w} {i},{w}" for i in range(10) for w in ("good", "bad")]
    train.write_text("body,verdict\n" + "\n".join(lines) + "\n")
    dev.write_text("body,verdict\nthe story is good,good\nthe story is bad,bad\nawful and boring,bad\nfun,good\n")
    prompt = r"review : {text}\nis it good ? answer :"
    out = tmp_path / "run"
    _invoke("finetune", "--model", tiny_llama, "--method", "lora", "--data-file", train, "--dev-file", dev,
            "--text-column", "body", "--label-column", "verdict", "--prompt-template", prompt,
            "--label-words", "no,yes", "--epochs", "2", "--lr", "5e-3", "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = eval_task_config(None, {"data_file": str(dev), "text_column": "body", "label_column": "verdict"},
                           adapter=out / "adapter")
    assert cfg.prompt_template == prompt.replace(r"\n", "\n") and cfg.label_words == ["no", "yes"]
    mine = eval_task_config(None, {"data_file": str(dev), "prompt_template": "{text} ?"}, adapter=out / "adapter")
    assert mine.prompt_template == "{text} ?"  # what the user gives wins
    shown = _invoke("eval", "--model", tiny_llama, "--adapter", out / "adapter", "--data-file", dev,
                    "--text-column", "body", "--label-column", "verdict")
    assert "(4 examples)" in shown
    assert f"{metrics['dev_metric']:.4f}" in [line for line in shown.splitlines() if "accuracy" in line][0]
    # the columns too: a file read with --text-column/--label-column needed them again
    cols = eval_task_config(None, {"data_file": str(dev)}, adapter=out / "adapter")
    assert (cols.text_column, cols.label_column) == ("body", "verdict")
    shown = _invoke("eval", "--model", tiny_llama, "--adapter", out / "adapter", "--data-file", dev)
    assert f"{metrics['dev_metric']:.4f}" in [line for line in shown.splitlines() if "accuracy" in line][0]


def test_finetune_deterministic_reaches_the_run_and_its_saved_config(tiny_llama, tmp_path):
    import yaml

    _invoke("finetune", "--model", tiny_llama, "--task", "sst2", "--method", "lora", "--train-samples", 16,
            "--dev-samples", 4, "--max-length", 16, "--deterministic", "--out", tmp_path / "run")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["deterministic"] is True


def test_eval_takes_a_prompt_tuning_adapter_and_scores_what_finetune_scored(tiny_llama, tmp_path):
    """PEFT refuses a prompt-learning adapter loaded as trainable: `edgeft eval --adapter` of a `--method prompt`
    run ended in a ValueError traceback."""
    train = tmp_path / "reviews.csv"
    train.write_text("text,label\n" + "\n".join(f"this film is {w} {i},{w}" for i in range(8) for w in ("good", "bad"))
                     + "\n")
    out = tmp_path / "run"
    _invoke("finetune", "--model", tiny_llama, "--method", "prompt", "--option", "num_virtual_tokens=4",
            "--data-file", train, "--dev-file", train, "--max-length", "16", "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    shown = _invoke("eval", "--model", tiny_llama, "--adapter", out / "adapter", "--data-file", train,
                    "--max-length", "16")
    assert f"{metrics['dev_metric']:.4f}" in [line for line in shown.splitlines() if "accuracy" in line][0]


def test_eval_scores_a_file_that_holds_only_some_of_the_adapters_labels_by_name(tiny_bert, tmp_path):
    """`edgeft eval` numbered a file's labels by their own sorted order: a file of only 'good' rows had 'good' as
    class 0, the adapter's 'bad', so its accuracy was that of the wrong class. Now class i is the adapter's."""
    lines = {w: [f"this film is {w} {i},{w}" for i in range(10)] for w in ("good", "bad")}
    files = {}
    for name, rows in (("all", lines["good"] + lines["bad"]), ("good", lines["good"]), ("bad", lines["bad"])):
        files[name] = tmp_path / f"{name}.csv"
        files[name].write_text("text,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    _invoke("finetune", "--model", tiny_bert, "--method", "lora", "--data-file", files["all"], "--dev-file",
            files["all"], "--max-length", "16", "--lr", "5e-3", "--epochs", "2", "--out", out)

    def accuracy(name):
        shown = _invoke("eval", "--model", tiny_bert, "--adapter", out / "adapter", "--data-file", files[name],
                        "--max-length", "16")
        return float([line for line in shown.splitlines() if "accuracy" in line][0].split()[-2])

    good, bad = accuracy("good"), accuracy("bad")
    assert abs(good * 10 + bad * 10 - accuracy("all") * 20) < 1e-3


def test_finetune_says_when_it_has_fewer_rows_than_asked(tiny_llama, tmp_path):
    """--dev-samples (or --train-samples) beyond a file's rows ran on all of them without a word."""
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "\n".join(f"this film is {w} {i},{w}" for i in range(6) for w in ("good", "bad"))
                    + "\n")
    shown = _invoke("finetune", "--model", tiny_llama, "--method", "lora", "--data-file", data, "--dev-file", data,
                    "--train-samples", 8, "--dev-samples", 50, "--max-length", 16, "--out", tmp_path / "run")
    flat = " ".join(shown.split())
    assert "--dev-samples 50: " in flat and "has 12 dev rows, so all 12 are used" in flat
    assert "--train-samples" not in flat  # 8 of 12 asked: nothing to say
    assert "shortened" not in flat  # at 16 tokens every row is whole


def test_finetune_says_when_max_length_shortens_rows(tiny_llama, tmp_path):
    """--max-length cut prompts (and answers) without a word; now the run says how many rows it shortened."""
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "\n".join(f"this film is {w} {i},{w}" for i in range(4) for w in ("good", "bad"))
                    + "\nthis film is good and the story is good and the film is good,good\n")
    shown = _invoke("finetune", "--model", tiny_llama, "--method", "lora", "--data-file", data, "--dev-file", data,
                    "--max-length", 20, "--epochs", 1, "--out", tmp_path / "run")
    assert "--max-length 20 shortened 1 of 9 training rows and 1 of 9 dev rows" in " ".join(shown.split())


def test_eval_says_when_answers_are_longer_than_the_tokens_it_generates(tiny_llama, tmp_path):
    """A GSM8K answer ends with its number: scored on fewer generated tokens than it has, it can only miss."""
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    data = tmp_path / "qa.jsonl"
    rows = [{"instruction": f"is this film good {i}", "response": "the film is good and the story is good"}
            for i in range(3)] + [{"instruction": "is it good", "response": "good"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "--model", str(tiny_llama), "--data-file", str(data), "--max-new-tokens"]
    result = CliRunner().invoke(build_app(), args + ["4"])
    assert result.exit_code == 0, result.output
    assert "3 of 4 dev answers are longer than the 4 tokens generated" in " ".join(result.output.split())
    result = CliRunner().invoke(build_app(), args + ["32"])
    assert result.exit_code == 0 and "longer than the" not in result.output
