"""`edgeft finetune` on generation and LM tasks at the edges of their data: text shorter than one block, a
tokenizer without pad or EOS, --max-length past an encoder's positions, answers in any script, runs shorter than
log_every steps."""

import json
import math

import pytest

from edgeft.data import metrics as M
from edgeft.errors import ConfigError, DataError
from edgeft.train.recipe import config_from_dict, run_finetune


def _cfg(model, out, task: dict, **train):
    return config_from_dict({"model": str(model), "method": "lora", "out": str(out), "task": task,
                             "train": {"epochs": 1, "batch_size": 2, "lr": 1e-3, **train}})


@pytest.mark.parametrize("text", ["مرحبا بالعالم", "שלום עולם", "Привет, мир!", "你好世界", "🎉🎉 🚀"])
def test_rouge_l_reads_every_script_not_only_ascii(text):
    """rouge-score's tokenizer keeps [a-z0-9]: an answer in Arabic, Hebrew, Cyrillic or Chinese scored 0 against
    itself, so a model trained on such notes read rougeL 0.0 before and after."""
    assert M.rouge_l([text], [text]) == pytest.approx(1.0)
    assert M.rouge_l([text], ["something else entirely"]) < 1.0


def test_rouge_l_of_ascii_text_is_rouge_scores_own():
    from rouge_score import rouge_scorer

    ref = "The runners were running quickly, and 3 dogs chased them_all for $5."
    pred = "A runner runs quick; 3 dog chase them for 5 dollars"
    default = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(ref, pred)["rougeL"].fmeasure
    assert M.rouge_l([pred], [ref]) == pytest.approx(default)


def test_perplexity_over_no_tokens_is_nan_not_a_perfect_one():
    assert math.isnan(M.perplexity(0.0, 0))


@pytest.mark.parametrize("sizes, says", [
    ({"train_samples": 1, "max_length": 512}, r"the training text is \d+ tokens, less than one block of "
                                              r"--max-length 512.*lower --max-length"),
    ({"train_samples": 30, "dev_samples": 1, "max_length": 256}, r"the dev text is \d+ tokens.*no block to score"),
])
def test_lm_text_shorter_than_one_block_is_refused_before_anything_is_written(tmp_path, tiny_llama, sizes, says):
    """A split packed into no block trained no step (adapter unchanged) or scored perplexity 1.0 over 0 tokens, and
    the run reported success."""
    out = tmp_path / "run"
    with pytest.raises(DataError, match=says):
        run_finetune(_cfg(tiny_llama, out, {"name": "shakespeare", **sizes}))
    assert not out.exists()


def test_a_tokenizer_without_pad_or_eos_is_named(tiny_llama):
    """Batching failed with `TypeError: 'NoneType' object cannot be interpreted as an integer`."""
    from transformers import PreTrainedTokenizerFast

    from edgeft.data.features import Featurizer
    from edgeft.data.tasks import Task

    base = PreTrainedTokenizerFast.from_pretrained(tiny_llama)
    bare = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, unk_token="[UNK]", bos_token="<s>")
    rows = [{"id": "r0", "instruction": "what is it", "input": "", "response": "a film"}]
    task = Task(name="notes", kind="generation", train=rows, dev=rows, metric_name="rougeL")
    with pytest.raises(ConfigError, match=r"no pad_token \(to pad batches with\) and no eos_token .*tokenizer_config"):
        Featurizer(task, bare, "lm", 32)


def test_max_length_past_an_encoders_positions_is_refused(tmp_path, tiny_bert):
    """A row longer than BERT's 512 positions stopped the run mid-epoch with `The size of tensor a (802) must match
    the size of tensor b (512)` from inside its embeddings."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"--max-length 600 .*has 512 positions.*--max-length 512 or less"):
        run_finetune(_cfg(tiny_bert, out, {"name": "sst2", "train_samples": 4, "dev_samples": 2, "max_length": 600}))
    assert not out.exists()


def test_a_run_shorter_than_log_every_records_its_loss(tmp_path, tiny_llama):
    """Fewer than log_every (10) steps wrote no train_loss event and metrics.json no loss: the plot's loss panel was
    empty and nothing said what the training loss had been."""
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"what is film {i}", "response": f"the film {i} is good"})
                            + "\n" for i in range(5)))
    out = tmp_path / "run"
    metrics = run_finetune(_cfg(tiny_llama, out, {"name": "notes", "data_file": str(data), "max_length": 32},
                                max_new_tokens=2))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    logged = [e for e in events if e["event"] == "train_loss"]
    assert [e["step"] for e in logged] == [metrics["steps"]] == [2]  # 4 training rows, batch 2
    assert math.isfinite(logged[0]["loss"]) and metrics["final_train_loss"] == logged[0]["loss"]


def test_pac_on_a_language_modelling_task_evaluates_from_its_cache(tmp_path, tiny_llama):
    """Training and dev blocks were both named '<task>-block-<i>': PAC's cache, keyed by id, held training block 0
    when dev block 0 came, and the first evaluation stopped with 'cached for other tokens ... Delete the cache'."""
    cfg = _cfg(tiny_llama, tmp_path / "run", {"name": "shakespeare", "train_samples": 12, "dev_samples": 12,
                                              "max_length": 32})
    metrics = run_finetune(cfg.model_copy(update={"method": "pac", "eval_before": False}))
    assert math.isfinite(metrics["dev_metric"]) and metrics["activation_cache"]["stale"] == 0


def test_finetune_takes_max_new_tokens_as_its_warning_says(tmp_path):
    """The long-answer warning sent users to a config file's train.max_new_tokens: finetune had no option for it
    (GSM8K's answers run past the default 64 tokens, so exact match read the cut answers)."""
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    result = CliRunner().invoke(build_app(), ["finetune", "--task", "gsm8k", "--max-new-tokens", "0", "--out",
                                              str(tmp_path / "run")])
    assert "train.max_new_tokens: Input should be greater than or equal to 1" in str(result.exception) + result.output
