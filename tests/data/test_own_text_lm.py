"""A user's own plain text (notes, a diary, a manual) for language modelling: .txt/.md paragraphs, or the text
column of a .jsonl/.csv with --task-kind lm. A .txt file was refused ('unsupported file type') and `--task-kind`
had no lm, so a personal LLM could not be adapted to a user's own writing."""

from __future__ import annotations

import pytest

from edgeft.data import TaskConfig, load_task
from edgeft.errors import ConfigError, DataError


def _notes(tmp_path, paragraphs: int = 20):
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(f"Entry {i}: the tomatoes\nneed water {i} times a week." for i in range(paragraphs))
                    + "\n\n\n")
    return path


def test_a_text_file_is_language_modelling_one_document_per_paragraph(tmp_path):
    task = load_task(TaskConfig(name="notes", data_file=str(_notes(tmp_path))))
    assert (task.kind, task.metric_name) == ("lm", "perplexity")
    assert len(task.train) + len(task.dev) == 20 and len(task.dev) == 2
    docs = sorted(task.train + task.dev, key=lambda d: int(d["_where"].rsplit(":", 1)[1]))
    assert docs[0]["text"] == "Entry 0: the tomatoes\nneed water 0 times a week." and docs[0]["_where"].endswith(":1")
    assert docs[1]["_where"].endswith(":4")  # line numbers of each paragraph's first line
    assert {d["id"] for d in task.train}.isdisjoint(d["id"] for d in task.dev)


def test_a_jsonl_text_column_with_task_kind_lm(tmp_path):
    path = tmp_path / "diary.jsonl"
    path.write_text("".join(f'{{"body": "day {i}: rain"}}\n' for i in range(10)))
    task = load_task(TaskConfig(name="diary", data_file=str(path), kind="lm", text_column="body"))
    assert task.kind == "lm" and sorted(d["text"] for d in task.train + task.dev)[0] == "day 0: rain"
    with pytest.raises(DataError, match=r"diary.jsonl:1: .*'text'"):
        load_task(TaskConfig(name="diary", data_file=str(path), kind="lm"))


def test_text_file_mistakes_are_named(tmp_path):
    empty = tmp_path / "empty.md"
    empty.write_text("\n \n")
    with pytest.raises(DataError, match=r"empty.md: no text"):
        load_task(TaskConfig(name="e", data_file=str(empty)))
    with pytest.raises(DataError, match=r"notes.txt: plain text is for language modelling"):
        load_task(TaskConfig(name="n", data_file=str(_notes(tmp_path)), kind="classification"))
    with pytest.raises(ConfigError, match=r"a language-modelling file is its text alone"):
        load_task(TaskConfig(name="n", data_file=str(_notes(tmp_path)), label_words=["a", "b"]))


def test_finetune_on_own_text_reports_perplexity_before_and_after(tmp_path, tiny_word_llama):
    from edgeft.train.recipe import config_from_dict, run_finetune

    cfg = config_from_dict({"model": str(tiny_word_llama), "method": "lora", "out": str(tmp_path / "run"),
                            "task": {"name": "notes", "data_file": str(_notes(tmp_path, 80)), "max_length": 16},
                            "train": {"epochs": 1, "batch_size": 4}})
    metrics = run_finetune(cfg)
    assert metrics["metric_name"] == "perplexity" and metrics["dev_metric"] < metrics["dev_metric_before"]
