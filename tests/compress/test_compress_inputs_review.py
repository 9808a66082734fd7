"""`edgeft compress` / `edgeft export` given malformed input: each is refused with a named error, before slow work."""

import shutil

import pytest

from edgeft.compress import pipeline
from edgeft.compress.pipeline import CompressConfig, claim_output, run_compress
from edgeft.errors import ConfigError, DataError, ModelError

QUIET = dict(calib_samples=2, calib_seq_len=32, eval_wikitext_windows=0, eval_seq_len=32, eval_task="none")


def _cli(args):
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    return CliRunner().invoke(build_app(), args)


def test_a_flag_and_an_option_that_disagree_are_refused(tmp_path):
    """`--bits 4 --option bits=8` quantised to 8 bits without a word: the --option value won."""
    res = _cli(["compress", "--model", str(tmp_path / "no-model"), "--method", "rtn", "--bits", "4",
                "--option", "bits=8", "--out", str(tmp_path / "out")])
    assert isinstance(res.exception, ConfigError), res.output
    assert "--bits 4 and --option bits=8 disagree" in str(res.exception)
    ok = _cli(["compress", "--model", str(tmp_path / "no-model"), "--method", "rtn", "--bits", "4",
               "--option", "bits=4", "--out", str(tmp_path / "out")])
    assert "no such model folder" in str(ok.exception)  # the same value twice is no conflict


def test_a_damaged_config_of_the_input_model_is_named(tiny_word_llama, tmp_path):
    """A model folder with a config.json that is not JSON gave transformers' bare OSError and a traceback."""
    from edgeft.compress.source import open_model

    bad = tmp_path / "bad"
    shutil.copytree(tiny_word_llama, bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="could not load the model.*config.json"):
        open_model(str(bad))


def test_a_compressed_folder_without_its_config_or_tokenizer_is_named(tiny_word_llama, tmp_path):
    """A compressed folder missing config.json or its tokenizer gave a ValueError traceback ('Unrecognized model')."""
    from edgeft.compress.store import load_compressed

    run_compress(CompressConfig(model=str(tiny_word_llama), method="merge", out=str(tmp_path / "m"), **QUIET),
                 log=lambda m: None)
    for part, files in (("config.json", ["config.json"]), ("tokenizer", ["tokenizer.json", "tokenizer_config.json"])):
        broken = tmp_path / part
        shutil.copytree(tmp_path / "m", broken)
        for name in files:
            (broken / name).unlink()
        with pytest.raises(ModelError, match=f"{broken}: its {part} is missing or damaged"):
            load_compressed(broken)


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path):
    """--out FILE/sub failed with NotADirectoryError once the whole step had run (export: FileExistsError)."""
    from edgeft.compress.export import claim_export

    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ConfigError, match="afile is a file, not a folder"):
        claim_output(CompressConfig(model="x", out=str(tmp_path / "afile" / "sub")))
    for out in (tmp_path / "afile" / "m.gguf", tmp_path / "afile"):  # no suffix: a folder for <model>-auto.gguf
        with pytest.raises(ConfigError, match="afile is a file, not a folder"):
            claim_export("x", None, out)
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("flag, task, error, match", [
    ("calib_task", "no-such-task", ConfigError, "--calib-task no-such-task: unknown task"),
    ("eval_task", "no-such-task", ConfigError, "--eval-task no-such-task: unknown task"),
    ("calib_task", "missing.jsonl", DataError, "--calib-task .*missing.jsonl: .*data file not found"),
])
def test_a_task_that_cannot_be_read_is_refused_before_the_model_is_opened(tmp_path, flag, task, error, match):
    """An unknown --calib-task was refused only after the input was measured; an unknown --eval-task on an earlier
    step's folder only after the whole step had run (its result thrown away)."""
    task = str(tmp_path / task) if task.endswith(".jsonl") else task
    cfg = CompressConfig(model=str(tmp_path / "no-model"), method="rtn", out=str(tmp_path / "o"),
                         **{**QUIET, flag: task})
    with pytest.raises(error, match=match):
        run_compress(cfg, log=lambda m: None)


@pytest.mark.parametrize("method, options, match", [
    ("prune", {"first_block": 5}, r"block range 5\.\.3 .*first_block"),
    ("magnitude", {"pattern": "3:7"}, "64 inputs, not a multiple of 7"),
    ("sparsegpt", {"pattern": "3:7"}, "64 inputs, not a multiple of 7"),
    ("distill", {"teacher": "/no/such/teacher"}, "no such model folder"),
])
def test_options_this_model_cannot_take_are_refused_before_it_is_measured(tiny_word_llama, tmp_path, monkeypatch,
                                                                          method, options, match):
    """These were refused only after the input had been measured (and calibrated): minutes on a real model."""
    def measured(*a, **k):
        raise AssertionError("the input was measured before the options were checked")

    monkeypatch.setattr(pipeline, "measure", measured)
    cfg = CompressConfig(model=str(tiny_word_llama), method=method, out=str(tmp_path / "o"), options=options,
                         **{**QUIET, "eval_wikitext_windows": 1})
    with pytest.raises((ConfigError, ModelError), match=match):
        run_compress(cfg, log=lambda m: None)


def test_a_safetensors_export_over_a_folder_keeps_the_users_own_files(tiny_word_llama, tmp_path):
    """--overwrite replaced the whole --out folder, deleting the user's files in it; `compress` keeps them."""
    from edgeft.compress.export import export_model
    from edgeft.compress.store import is_compressed_folder

    out = tmp_path / "hf"
    (out / "photos").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "photos" / "a.jpg").write_text("mine too")
    (out / "edgeft_compress.json").write_text("{}")  # an earlier compress step's: it must go, or edgeft misreads
    export_model(str(tiny_word_llama), out, "safetensors", dtype="float32")
    assert (out / "notes.txt").read_text() == "mine" and (out / "photos" / "a.jpg").read_text() == "mine too"
    assert (out / "model.safetensors").is_file() and not is_compressed_folder(out)


def test_a_gguf_export_onto_a_folder_named_like_a_file_writes_into_it(tiny_smol, tmp_path):
    """--out x.gguf naming an existing folder: the whole file was written, then renamed onto the folder
    (IsADirectoryError, with a traceback)."""
    from edgeft.compress.export import claim_export, export_model

    out = tmp_path / "x.gguf"
    out.mkdir()
    claim_export(str(tiny_smol), None, out, "gguf", "f16")
    info = export_model(str(tiny_smol), out, "gguf", "f16")
    assert info["path"] == str(out / f"{tiny_smol.name}-f16.gguf") and (out / f"{tiny_smol.name}-f16.gguf").is_file()


def test_an_encoder_without_an_adapter_task_is_asked_for_its_calibration_task(tiny_bert, tmp_path):
    """The default calibration text (wikitext2) was refused as 'task wikitext2 needs a causal LM': a task the user
    never named, and no word of --calib-task."""
    cfg = CompressConfig(model=str(tiny_bert), method="sparsegpt", out=str(tmp_path / "o"), **QUIET)
    with pytest.raises(ConfigError, match="no adapter task. Give --calib-task"):
        run_compress(cfg, log=lambda m: None)


def test_a_manifest_edited_by_hand_is_named(tiny_word_llama, tmp_path):
    """A manifest naming a layer the config lacks, or holding a list where a mapping belongs, gave AttributeError."""
    import json

    from edgeft.compress.store import MANIFEST, load_compressed

    run_compress(CompressConfig(model=str(tiny_word_llama), method="rtn", out=str(tmp_path / "q"), **QUIET),
                 log=lambda m: None)
    for case, edit, match in (
            ("layer", lambda d: d["quantized"]["modules"].append("model.layers.9.mlp.up_proj"), "do not fit"),
            ("list", lambda d: d.update(quantized=[]), "quantized \\(a list, not a dict\\)")):
        folder = tmp_path / case
        shutil.copytree(tmp_path / "q", folder)
        data = json.loads((folder / MANIFEST).read_text())
        edit(data)
        (folder / MANIFEST).write_text(json.dumps(data))
        with pytest.raises(ModelError, match=f"{MANIFEST}: .*{match}"):
            load_compressed(folder)


def test_a_task_the_classifier_cannot_score_is_refused_before_it_is_measured(tiny_bert, tmp_path):
    """--eval-task stsb (a regression) on a 2-class classifier was a RuntimeError from torch's mse_loss."""
    cfg = CompressConfig(model=str(tiny_bert), method="magnitude", out=str(tmp_path / "o"),
                         **{**QUIET, "eval_task": "stsb"})
    with pytest.raises(ConfigError, match="--eval-task stsb: a regression task needs 1 classifier output"):
        run_compress(cfg, log=lambda m: None)
