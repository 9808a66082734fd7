"""A user's malformed data file gives a DataError naming the file (and line), never a traceback."""

import csv
import json
import re

import pytest

from edgeft.data import TaskConfig, load_task
from edgeft.data.readers import read_table
from edgeft.errors import DataError
from edgeft.paths import DATASETS_DIR


def test_header_only_csv_says_no_data_rows(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("text,label\n")
    with pytest.raises(DataError, match=r"mine.csv: the file has a header row \(text, label\) but no data rows"):
        load_task(TaskConfig(name="mine", data_file=str(p)))


def test_empty_jsonl_says_no_data_rows(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text("")
    with pytest.raises(DataError, match=r"mine.jsonl: no data rows"):
        load_task(TaskConfig(name="mine", data_file=str(p)))


def test_csv_field_over_128_kib_is_read_whole(tmp_path):
    p = tmp_path / "long.csv"
    long_text = "word " * 50_000  # 250 kB, over csv's 128 KiB default field limit
    rows = [("long", long_text)] + [(f"short {i}", "x") for i in range(5)]
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "text"])
        w.writerows(rows)
    limit = csv.field_size_limit()
    got = read_table(p)
    assert [r["text"] for _, r in got] == [t for _, t in rows]
    assert [lineno for lineno, _ in got] == list(range(2, 8))
    assert csv.field_size_limit() == limit  # the process-wide limit is left as it was


def test_csv_unclosed_quote_names_the_line_where_the_row_starts(tmp_path):
    p = tmp_path / "open.csv"
    p.write_text('text,label\nfine,a\n"left open,b\nnext,c\n')
    with pytest.raises(DataError, match=r"open.csv:3: not valid CSV .*double quote opened in this row is never closed"):
        read_table(p)


def test_csv_text_after_closing_quote_names_file_and_line(tmp_path):
    p = tmp_path / "junk.csv"
    p.write_text('text,label\nfine,a\n"quoted" then more,b\n')
    with pytest.raises(DataError, match=r"junk.csv:3: not valid CSV"):
        read_table(p)


def test_csv_quoted_newline_is_one_row_at_its_first_line(tmp_path):
    p = tmp_path / "multi.csv"
    p.write_text('text,label\n"two\nlines",a\nnext,b\n')
    assert read_table(p) == [(2, {"text": "two\nlines", "label": "a"}), (4, {"text": "next", "label": "b"})]


def test_tsv_bare_quote_is_text_and_errors_name_the_right_line(tmp_path):
    p = tmp_path / "glue_style.tsv"
    p.write_text('sentence\tlabel\n"quoted start of a sentence\t1\nplain\t0\n" another\t1\nbad\trow\textra\n')
    with pytest.raises(DataError, match=r"glue_style.tsv:5: expected 2 columns \(sentence, label\), found 3"):
        read_table(p)
    p.write_text('sentence\tlabel\n"quoted start of a sentence\t1\nplain\t0\n" another\t1\n')
    rows = read_table(p)
    assert [(n, r["sentence"]) for n, r in rows] == [(2, '"quoted start of a sentence'), (3, "plain"), (4, '" another')]


@pytest.mark.parametrize("folder,split,count", [("SST-2", "train", 67349), ("SST-2", "dev", 872),
                                                ("MRPC", "train", 3668), ("STS-B", "dev", 1500)])
def test_glue_tsv_as_own_file_reads_every_row(folder, split, count):
    """GLUE text holds bare quotes: read as a user's .tsv, every line is still one row (README counts)."""
    assert len(read_table(DATASETS_DIR / "glue" / folder / f"{split}.tsv")) == count


def test_own_tsv_task_with_quotes_keeps_every_row(tmp_path):
    p = tmp_path / "mine.tsv"
    lines = [f'"{i} said it\t{"pos" if i % 2 else "neg"}' for i in range(20)]
    p.write_text("text\tlabel\n" + "\n".join(lines) + "\n")
    task = load_task(TaskConfig(name="mine", data_file=str(p), dev_fraction=0.25))
    assert len(task.train) + len(task.dev) == 20
    assert sorted(e["text"] for e in task.train + task.dev) == sorted(f'"{i} said it' for i in range(20))
    # the same rows as JSON Lines give the same task
    j = tmp_path / "mine.jsonl"
    j.write_text("\n".join(json.dumps({"text": line.split("\t")[0], "label": line.split("\t")[1]}) for line in lines))
    same = load_task(TaskConfig(name="mine", data_file=str(j), dev_fraction=0.25))
    assert [e["text"] for e in same.dev] == [e["text"] for e in task.dev]


def _pairs_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_user_file_with_text2_is_a_pair_task(tmp_path):
    """A file in the documented record format keeps its second text (it was once dropped without a word)."""
    rows = [{"text": f"premise {i}", "text2": f"hypothesis {i}", "label": "yes" if i % 2 else "no"} for i in range(8)]
    p = _pairs_file(tmp_path / "pairs.jsonl", rows)
    task = load_task(TaskConfig(name="mine", data_file=str(p), dev_fraction=0.25))
    assert task.is_pair
    assert all(ex["text2"].startswith("hypothesis") for ex in task.train + task.dev)
    assert "{text2}" in task.prompt_template


def test_user_file_row_missing_text2_names_the_line(tmp_path):
    rows = [{"text": "a", "text2": "b", "label": "yes"}, {"text": "c", "label": "no"}]
    p = _pairs_file(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError, match=r"pairs\.jsonl.*2.*text2"):
        load_task(TaskConfig(name="mine", data_file=str(p), dev_fraction=0.5))


def test_user_file_without_text2_stays_single(tmp_path):
    p = _pairs_file(tmp_path / "one.jsonl", [{"text": f"t {i}", "label": "yes" if i % 2 else "no"} for i in range(6)])
    task = load_task(TaskConfig(name="mine", data_file=str(p), dev_fraction=0.5))
    assert not task.is_pair and all("text2" not in ex for ex in task.train)


def _entailment_file(tmp_path):
    rows = [{"text": f"premise {i}", "text2": f"hypothesis {i}", "label": "not_entailment" if i % 2 else "entailment"}
            for i in range(8)]
    return _pairs_file(tmp_path / "nli.jsonl", rows)


def test_own_prompt_and_label_words_are_what_the_model_reads(tmp_path):
    """A question at the end of the prompt and natural label words: the featurizer reads these, not the generic
    'Label (entailment or not_entailment):' and the names' first tokens."""
    from edgeft.cli.common import data_task_keys
    from edgeft.data.features import Featurizer

    keys = data_task_keys({"prompt_template": r"Premise: {text}\nHypothesis: {text2}\nDoes the premise entail it?",
                           "label_words": "yes, no", "text_column": None})
    task = load_task(TaskConfig(name="mine", data_file=str(_entailment_file(tmp_path)), dev_fraction=0.25, **keys))
    assert task.label_names == ["entailment", "not_entailment"] and task.label_words == [" yes", " no"]
    from tiny_models import word_tokenizer

    prompt = "premise : {text} hypothesis : {text2} does the premise entail it ?"
    tok = word_tokenizer("llama", extra_text=prompt + " yes no " + " ".join(
        ex["text"] + " " + ex["text2"] for ex in task.train))
    feats = Featurizer(task, tok, "verbalize", 64)
    assert feats.label_token_ids == [tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")]
    ex = task.train[0]
    read = tok.decode(feats.encode([ex])[0]["input_ids"], skip_special_tokens=True)
    assert read == f"premise : {ex['text']} hypothesis : {ex['text2']} does the premise entail it ?"
    assert task.shape()["prompt_template"] == task.prompt_template  # a saved adapter carries them
    assert task.shape()["label_words"] == [" yes", " no"]


@pytest.mark.parametrize("prompt, wrong", [
    ("Premise: {text}\nAnswer:", "must use exactly {text}, {text2}; it has {text}"),  # the second text dropped
    ("P: {premise} H: {text2}", "it has {premise}, {text2}"),
    ("P: {text} H: {text2} {", "literal brace"),
])
def test_a_prompt_that_does_not_fit_the_file_is_refused_naming_why(tmp_path, prompt, wrong):
    from edgeft.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(wrong)):
        load_task(TaskConfig(name="mine", data_file=str(_entailment_file(tmp_path)), prompt_template=prompt))


def test_label_words_must_match_the_labels_and_stay_with_own_classification_files(tmp_path):
    from edgeft.errors import ConfigError

    with pytest.raises(ConfigError, match=r"2 labels \(entailment, not_entailment, in this order\)"):
        load_task(TaskConfig(name="mine", data_file=str(_entailment_file(tmp_path)), label_words=["yes"]))
    with pytest.raises(ConfigError, match="one non-empty word for each"):
        load_task(TaskConfig(name="mine", data_file=str(_entailment_file(tmp_path)), label_words=["yes", " "]))
    with pytest.raises(ConfigError, match="bundled task has its own prompt"):
        load_task(TaskConfig(name="rte", prompt_template="{text} {text2}"))
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps({"instruction": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(4)))
    with pytest.raises(ConfigError, match="generation file's prompt is its instruction"):
        load_task(TaskConfig(name="mine", data_file=str(gen), prompt_template="{text}"))


def test_a_user_file_with_rtes_prompt_reads_token_for_token_as_bundled_rte(tmp_path, smol_tokenizer):
    """The h7 finding (docs/benchmarks_pac.md): PAC on SmolLM2 scores RTE's rows at chance through the generic
    template and at 55% through RTE's own prompt. With --prompt-template and --label-words a user's file is read
    exactly as the bundled task: the same tokens, label positions and label-word ids for every row."""
    from edgeft.data.features import Featurizer

    rte = load_task(TaskConfig(name="rte", train_samples=40, dev_samples=8))
    path = tmp_path / "rte.jsonl"
    path.write_text("".join(json.dumps({"text": ex["text"], "text2": ex["text2"],
                                        "label": rte.label_names[ex["label"]]}) + "\n" for ex in rte.train))
    mine = load_task(TaskConfig(name="mine", data_file=str(path), dev_fraction=0.1, prompt_template=rte.prompt_template,
                                label_words=["yes", "no"]))
    generic = load_task(TaskConfig(name="mine", data_file=str(path), dev_fraction=0.1))
    assert mine.label_names == rte.label_names
    feats = {name: Featurizer(t, smol_tokenizer, "verbalize", 256) for name, t in
             (("rte", rte), ("mine", mine), ("generic", generic))}
    assert feats["mine"].label_token_ids == feats["rte"].label_token_ids
    assert feats["generic"].label_token_ids != feats["rte"].label_token_ids
    by_text = {ex["text"] + ex["text2"]: ex for ex in rte.train}
    ours = feats["mine"].encode(mine.train)
    theirs = feats["rte"].encode([by_text[ex["text"] + ex["text2"]] for ex in mine.train])
    strip = ("id",)
    assert [{k: v for k, v in f.items() if k not in strip} for f in ours] == \
           [{k: v for k, v in f.items() if k not in strip} for f in theirs]
    assert feats["generic"].encode(generic.train[:1])[0]["input_ids"] != ours[0]["input_ids"]
