"""`edgeft compress` end to end on a tiny model: steps chain through folders and every step is measured."""

import json

import pytest
import torch

from edgeft.compress.pipeline import CompressConfig, config_from_dict, run_compress
from edgeft.compress.store import load_compressed
from edgeft.errors import ConfigError

from .helpers import logits_of, make_adapter

FAST = dict(calib_samples=4, calib_seq_len=64, eval_wikitext_windows=2, eval_seq_len=64, eval_task_samples=4)


def run(model, method, out, **kw):
    return run_compress(CompressConfig(model=str(model), method=method, out=str(out), **{**FAST, **kw}),
                        log=lambda m: None)


def test_gptq_step_is_stored_packed_and_measured(tiny_word_llama, tmp_path):
    res = run(tiny_word_llama, "gptq", tmp_path / "g", options={"bits": 4, "group_size": 32}, dtype="float32")
    inp, step = res["records"]
    assert inp["step"] == "input"
    assert step["label"] == "GPTQ 4-bit g32 act-order guided norm-tweaked +embedding"  # the LM defaults
    assert step["size_bytes"] < 0.2 * inp["size_bytes"]  # the tied embedding is 4-bit too
    assert step["wikitext2_ppl"] < 1.5 * inp["wikitext2_ppl"]
    assert step["extra"]["calibration"]["tokens"] == 4 * 64
    for name in ("compress_report.json", "compress_report.md", "compress_report.png"):
        assert (tmp_path / "g" / name).is_file()
    model, _, manifest = load_compressed(tmp_path / "g")
    assert [s["step"] for s in manifest.steps] == ["input", "gptq"]
    assert type(model.model.layers[0].mlp.down_proj).__name__ == "QuantLinear"


def test_gptq_beats_rtn_on_the_same_grid(tiny_word_llama, tmp_path):
    opts = {"bits": 2, "group_size": 32}  # a harsh grid, so the difference is clear on a tiny model
    gptq = run(tiny_word_llama, "gptq", tmp_path / "g", options=opts, calib_samples=16, eval_wikitext_windows=6)
    rtn = run(tiny_word_llama, "rtn", tmp_path / "r", options=opts, eval_wikitext_windows=6)
    assert gptq["records"][-1]["wikitext2_ppl"] < rtn["records"][-1]["wikitext2_ppl"]


def test_adapter_task_is_the_default_calibration_and_metric(tiny_word_llama, tmp_path):
    adapter = make_adapter(tiny_word_llama, tmp_path / "lora", task_name="shakespeare")
    res = run(tiny_word_llama, "sparsegpt", tmp_path / "s", adapter=str(adapter), options={"pattern": "2:4"})
    inp, step = res["records"]
    assert inp["label"] == "fine-tuned (merged)"
    assert step["task"] == "shakespeare" and step["task_metric_name"] == "perplexity"
    assert step["extra"]["calibration"]["task"] == "shakespeare"
    assert step["nonzero_params"] <= 0.5 * step["extra"]["block_linear_weights"] + 1


def test_chain_prune_then_distill_then_quantise(tiny_word_llama, tmp_path):
    run(tiny_word_llama, "prune", tmp_path / "p", options={"ratio": 0.5, "first_block": 0, "last_block": 2,
                                                           "round_to": 1})
    res = run(tmp_path / "p", "distill", tmp_path / "d", options={"teacher": str(tiny_word_llama), "steps": 2,
                                                                  "batch_size": 2, "max_new_tokens": 8,
                                                                  "prompt_len": 8, "pairs": 8})
    assert len(res["records"][-1]["extra"]["distill"]["losses"]) == 2
    res = run(tmp_path / "d", "gptq", tmp_path / "q", options={"group_size": 32})
    labels = [r["label"] for r in res["records"]]
    assert labels[0] == "input model" and labels[1].startswith("LLM-Pruner") and labels[2].startswith("GKD")
    assert labels[3].startswith("GPTQ")
    pruned, _, manifest = load_compressed(tmp_path / "q")
    assert pruned.model.layers[0].mlp.gate_proj.out_features == 64  # 128 channels, half removed
    assert pruned.model.layers[2].mlp.gate_proj.out_features == 128  # outside the pruned range
    assert manifest.shapes  # per-layer sizes recorded
    assert logits_of(pruned).shape[-1] == pruned.config.vocab_size


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="calib_sampels: unknown key"):
        config_from_dict({"model": "x", "calib_sampels": 3})
    with pytest.raises(ConfigError, match="unknown compression method 'gptx'"):
        run_compress(CompressConfig(model="x", method="gptx", out=str(tmp_path)))


def test_cli_compress_and_export(tiny_word_llama, tmp_path):
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    runner = CliRunner()
    result = runner.invoke(build_app(), ["compress", "--model", str(tiny_word_llama), "--method", "magnitude",
                                         "--sparsity", "0.5", "--calib-samples", "2", "--eval-wikitext-windows", "1",
                                         "--eval-seq-len", "32", "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m" / "compress_report.json").read_text())
    assert report["steps"][-1]["label"] == "magnitude 50%"
    result = runner.invoke(build_app(), ["export", "--model", str(tmp_path / "m"), "--format", "safetensors",
                                         "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert abs(float((reloaded.model.layers[0].mlp.up_proj.weight == 0).float().mean()) - 0.5) < 0.01
    assert torch.isfinite(logits_of(reloaded)).all()


def test_encoder_classifier_is_sparsified_with_its_task_data(tiny_bert, tmp_path):
    res = run(tiny_bert, "sparsegpt", tmp_path / "b", options={"sparsity": 0.5}, calib_task="sst2",
              eval_task="sst2", eval_task_samples=16, calib_seq_len=32)
    inp, step = res["records"]
    assert step["wikitext2_ppl"] is None  # an encoder has no perplexity
    assert step["task"] == "sst2" and step["task_metric_name"] == "accuracy" and 0 <= step["task_metric"] <= 1
    assert step["nonzero_params"] <= 0.5 * step["extra"]["block_linear_weights"] + 1
    model, _, manifest = load_compressed(tmp_path / "b")
    assert manifest.head == "sequence_classification" and type(model).__name__ == "BertForSequenceClassification"


def test_gptq_on_a_classifier_is_unguided_unless_asked(tiny_bert, tmp_path):
    """guided=None resolves per model: off for an encoder classifier; asking for it there is a clear error."""
    kw = dict(calib_task="sst2", eval_task="none", eval_wikitext_windows=0, calib_seq_len=32)
    res = run(tiny_bert, "gptq", tmp_path / "b", options={"bits": 8, "group_size": 32}, **kw)
    assert res["records"][-1]["label"] == "GPTQ 8-bit g32 act-order"
    with pytest.raises(ConfigError, match="guided=false"):
        run(tiny_bert, "gptq", tmp_path / "c", options={"bits": 8, "group_size": 32, "guided": True}, **kw)


def test_an_adapter_on_your_own_file_calibrates_and_scores_on_that_file(tiny_word_llama, tmp_path):
    """The note records the data file and its columns; compress calibrates on it and reports its metric (before,
    `unknown task 'notes'`). If the file has moved, compress says so and calibrates on WikiText-2."""
    rows = [{"q": f"say {w}", "a": w} for w in ("the", "a", "of", "and", "to", "in", "is", "it") * 3]
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from edgeft.data import TaskConfig, load_task
    from edgeft.methods import get_method
    from edgeft.methods.base import write_adapter_note
    from edgeft.models import load_backbone

    task = load_task(TaskConfig(name=str(data), data_file=str(data), instruction_column="q", response_column="a",
                                train_samples=8, max_length=32))
    bb = load_backbone(str(tiny_word_llama), head="causal_lm")
    method = get_method("bitfit")
    method.save(method.prepare(bb, task), tmp_path / "bitfit")
    write_adapter_note(tmp_path / "bitfit", method, bb, task, {"max_length": 32})
    said = []
    res = run(tiny_word_llama, "sparsegpt", tmp_path / "s", adapter=str(tmp_path / "bitfit"),
              options={"pattern": "2:4"}, eval_task_samples=3)
    step = res["records"][-1]
    assert step["task"] == "notes" and step["task_metric_name"] == "rougeL"
    assert step["extra"]["calibration"]["task"] == str(data)
    data.rename(tmp_path / "moved.jsonl")
    res = run_compress(CompressConfig(model=str(tiny_word_llama), adapter=str(tmp_path / "bitfit"), method="sparsegpt",
                                      options={"pattern": "2:4"}, out=str(tmp_path / "s2"),
                                      **{**FAST, "eval_wikitext_windows": 0}), log=said.append)
    assert any("is gone" in m for m in said) and res["records"][-1]["extra"]["calibration"]["task"] == "wikitext2"


@pytest.mark.parametrize("windows, eval_task, units", [(0, "sst2", 1), (10, "sst2", 3), (16, "none", 2)])
def test_the_evaluation_bars_end_full(tiny_word_llama, tmp_path, windows, eval_task, units):
    """The bars were sized windows // 8 + 1 and the task metric never advanced them: 'evaluate output 0/1' at the
    end of a run without WikiText-2 windows, 1/2 with 10 windows."""
    bars = {}

    def factory(name, total):
        bars[name] = [0, total]

        def advance(*_):
            bars[name][0] += 1
        return advance

    run_compress(CompressConfig(model=str(tiny_word_llama), method="merge", out=str(tmp_path / "m"),
                                **{**FAST, "eval_wikitext_windows": windows, "eval_task": eval_task}),
                 progress_factory=factory, log=lambda m: None)
    assert bars == {"evaluate input": [units, units], "evaluate output": [units, units]}


def test_an_adapter_kept_beside_the_model_is_not_reported_as_merged(tiny_word_llama, tmp_path):
    """A prompt (or PAC) adapter cannot be folded in: the report's first row said 'fine-tuned (merged)' and showed
    the base model's task metric as the fine-tune's (a PAC SST-2 fine-tune read 0.505, its zero-shot figure)."""
    adapter = make_adapter(tiny_word_llama, tmp_path / "prompt", "prompt")
    said = []
    res = run_compress(CompressConfig(model=str(tiny_word_llama), adapter=str(adapter), method="merge",
                                      out=str(tmp_path / "m"), **{**FAST, "eval_wikitext_windows": 0}),
                       log=said.append)
    assert res["records"][0]["label"] == "base (adapter kept beside)"
    assert any("every figure below is of the base model without it" in m and "prompt" in m for m in said)


def test_a_storage_dtype_it_cannot_write_is_refused_before_the_model_is_opened(tmp_path):
    """--dtype int8 was refused only after loading and merging, leaving an empty --out folder behind."""
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    with pytest.raises(ConfigError, match=r"dtype: Input should be 'float16', 'bfloat16' or 'float32'"):
        config_from_dict({"model": "x", "dtype": "int8"})
    res = CliRunner().invoke(build_app(), ["compress", "--model", str(tmp_path / "no-model"), "--method", "merge",
                                           "--dtype", "int8", "--out", str(tmp_path / "out")])
    assert isinstance(res.exception, ConfigError) and "dtype" in str(res.exception)
    assert not (tmp_path / "out").exists()


def test_a_sparsity_beside_a_pattern_that_disagrees_is_refused():
    """--sparsity 0.7 --pattern 2:4 pruned 50% and labelled it '2:4': the 0.7 was dropped without a word."""
    from edgeft.compress.registry import get_step

    for method in ("magnitude", "sparsegpt"):
        with pytest.raises(ConfigError, match=r"sparsity 0.7 and pattern 2:4 disagree: the pattern removes 2/4 = 0.5"):
            get_step(method, {"sparsity": 0.7, "pattern": "2:4"})
        assert get_step(method, {"sparsity": 0.5, "pattern": "2:4"})[1].pattern == "2:4"
        assert get_step(method, {"pattern": "2:4"})[1].pattern == "2:4"


def test_an_overwrite_stopped_part_way_leaves_the_earlier_output_whole(tiny_word_llama, tmp_path, monkeypatch):
    """`edgeft compress --overwrite` cleared the earlier output when it started, so a run stopped or failing later
    left no model at all. Now the new output is written beside it and replaces compress's files only once whole; the
    user's own files in the folder stay either way."""
    import edgeft.compress.pipeline as pipeline
    from edgeft.compress.pipeline import claim_output

    out = tmp_path / "m"
    run(tiny_word_llama, "rtn", out, options={"bits": 8})
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def stopped(*args, **kw):
        raise KeyboardInterrupt

    cfg = CompressConfig(model=str(tiny_word_llama), method="rtn", options={"bits": 4}, out=str(out), **FAST)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "write_report", stopped)  # the last thing a step writes
        with pytest.raises(KeyboardInterrupt), claim_output(cfg, overwrite=True):
            run_compress(cfg, log=lambda m: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no .partial / .replaced left

    with claim_output(cfg, overwrite=True):
        run_compress(cfg, log=lambda m: None)
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    _, _, manifest = load_compressed(out)
    assert manifest.steps[-1]["label"].startswith("RTN 4-bit")
    assert sorted(before) == sorted(p.name for p in out.iterdir())  # the same files, now the 4-bit step's


def test_sigterm_during_edgeft_compress_keeps_the_earlier_output_and_says_so(tiny_word_llama, tmp_path, monkeypatch):
    """`edgeft compress` had no stop handling: SIGTERM (a closed laptop lid's shutdown, a job scheduler) killed it
    where it stood, leaving the half-written folder beside the output. Now it ends through its clean-up, says the
    output is as it was, and exits 128 + 15."""
    import os
    import signal

    from typer.testing import CliRunner

    import edgeft.compress.pipeline as pipeline
    from edgeft.cli.app import build_app

    out = tmp_path / "m"
    run(tiny_word_llama, "rtn", out, options={"bits": 8})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(pipeline, "write_report", lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    res = CliRunner().invoke(build_app(), ["compress", "--model", str(tiny_word_llama), "--method", "rtn", "--bits",
                                           "4", "--out", str(out), "--overwrite", "--calib-samples", "4",
                                           "--calib-seq-len", "64", "--eval-wikitext-windows", "2",
                                           "--eval-seq-len", "64"])
    assert res.exit_code == 128 + signal.SIGTERM, res.output
    assert "stopped by SIGTERM" in res.output and "is as it was before this run" in res.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
