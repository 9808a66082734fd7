import json

import pytest

from edgeft.data import TaskConfig, load_task
from edgeft.data.readers import read_jsonl, read_tsv
from edgeft.errors import ConfigError, DataError

GLUE_COUNTS = {"sst2": (67349, 872), "cola": (8551, 1043), "mrpc": (3668, 408), "rte": (2490, 277),
               "stsb": (5749, 1500), "wnli": (635, 71)}


@pytest.mark.parametrize("name", sorted(GLUE_COUNTS))
def test_glue_tasks_load_every_row(name):
    task = load_task(name)
    assert (len(task.train), len(task.dev)) == GLUE_COUNTS[name]
    assert task.metric_name in {"accuracy", "f1", "mcc", "pearson"}
    if task.kind == "classification":
        assert {ex["label"] for ex in task.dev} <= set(range(task.num_labels))


def test_instruction_and_lm_tasks():
    dolly = load_task("dolly")
    assert len(dolly.train) == 14931 and len(dolly.dev) == 80
    assert {"instruction", "input", "response", "category"} <= set(dolly.train[0])
    gsm = load_task("gsm8k")
    assert (len(gsm.train), len(gsm.dev)) == (7473, 1319)
    assert load_task("wikitext2").kind == "lm"
    assert load_task("shakespeare").metric_name == "perplexity"


def test_subset_is_seeded_and_deterministic():
    a = load_task(TaskConfig(name="sst2", train_samples=50, seed=3))
    b = load_task(TaskConfig(name="sst2", train_samples=50, seed=3))
    c = load_task(TaskConfig(name="sst2", train_samples=50, seed=4))
    assert [e["id"] for e in a.train] == [e["id"] for e in b.train]
    assert [e["id"] for e in a.train] != [e["id"] for e in c.train]
    assert len(a.train) == 50


def test_malformed_tsv_row_names_file_and_line(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("sentence\tlabel\ngood film\t1\nno label here\n")
    with pytest.raises(DataError, match=r"bad.tsv:3: expected 2 tab-separated columns, found 1"):
        read_tsv(p, n_columns=2, header=True)


def test_malformed_jsonl_row_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(p)


def test_missing_data_file_is_clear(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_task(TaskConfig(name="mine", data_file=str(tmp_path / "nope.jsonl")))


def test_unknown_task_is_clear():
    with pytest.raises(ConfigError, match="unknown task 'sst3'"):
        load_task("sst3")


def test_own_classification_data_split_by_seed(tmp_path):
    p = tmp_path / "mine.jsonl"
    rows = [{"text": f"note {i}", "label": "work" if i % 2 else "home"} for i in range(40)]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = load_task(TaskConfig(name="mine", data_file=str(p), seed=1, dev_fraction=0.25))
    assert task.kind == "classification" and task.label_names == ["home", "work"]
    assert len(task.train) == 30 and len(task.dev) == 10
    assert not {e["id"] for e in task.train} & {e["id"] for e in task.dev}
    assert task.label_words == [" home", " work"]


def test_own_generation_csv_with_named_columns(tmp_path):
    p = tmp_path / "notes.csv"
    p.write_text('question,answer\n"What is 2+2?",4\n"Capital of France?",Paris\n"Colour of sky?",blue\n')
    dev = tmp_path / "dev.csv"
    dev.write_text('question,answer\n"What is 3+3?",6\n')
    task = load_task(TaskConfig(name="notes", data_file=str(p), dev_file=str(dev), instruction_column="question",
                                response_column="answer"))
    assert task.kind == "generation" and len(task.train) == 3 and len(task.dev) == 1
    assert task.dev[0]["response"] == "6"


def test_own_data_empty_field_is_an_error(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text('{"text": "fine", "label": "a"}\n{"text": "", "label": "b"}\n')
    with pytest.raises(DataError, match=r"mine.jsonl:2: field 'text' is empty; fill it in or remove this row"):
        load_task(TaskConfig(name="mine", data_file=str(p)))


def test_a_text_column_of_another_name_is_named_with_the_option_that_reads_it(tmp_path):
    """A CSV whose text column is 'sentence': the error names file, line and the columns there, and the option
    (CLI and config key) that points edgeft at it; with that option the same file loads."""
    p = tmp_path / "reviews.csv"
    p.write_text('sentence,label\n"great, really",pos\n"awful, just awful",neg\n"fine",neg\n"superb",pos\n')
    with pytest.raises(DataError, match=r"reviews.csv:2: missing field 'text' \(fields present: sentence, label\)\. "
                                        r"If the column has another name, give it with --text-column "
                                        r"\(task.text_column in a config file\)"):
        load_task(TaskConfig(name="reviews", data_file=str(p)))
    task = load_task(TaskConfig(name="reviews", data_file=str(p), text_column="sentence", dev_fraction=0.25))
    assert sorted(e["text"] for e in task.train + task.dev) == ["awful, just awful", "fine", "great, really", "superb"]


def test_unknown_task_config_key():
    with pytest.raises(Exception, match="extra"):
        TaskConfig(name="sst2", nonsense=1)


def test_train_and_dev_files_of_the_same_name_get_distinct_ids(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rows = [{"text": f"note {i}", "label": "work" if i % 2 else "home"} for i in range(6)]
    for folder in ("a", "b"):
        (tmp_path / folder / "x.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = load_task(TaskConfig(name="x", data_file=str(tmp_path / "a" / "x.jsonl"),
                                dev_file=str(tmp_path / "b" / "x.jsonl")))
    assert not {e["id"] for e in task.train} & {e["id"] for e in task.dev}


def test_generation_prompt_for_evaluation_does_not_depend_on_the_answer(tiny_llama):
    from transformers import AutoTokenizer

    from edgeft.data.features import Featurizer
    from edgeft.data.tasks import Task

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    long_prompt = " ".join(["word"] * 60)
    rows = [{"id": f"r{i}", "instruction": long_prompt, "input": "", "response": answer}
            for i, answer in enumerate(["short", " ".join(["long"] * 40)])]
    task = Task(name="t", kind="generation", train=rows, dev=rows, metric_name="rougeL")
    feats = Featurizer(task, tok, "lm", max_length=64).encode(rows)
    assert feats[0]["prompt_ids"] == feats[1]["prompt_ids"]  # same prompt, different answers
    assert all(len(f["input_ids"]) <= 64 for f in feats)


def test_label_words_sharing_a_first_token_are_an_error_that_names_the_way_out(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    from edgeft.data.features import Featurizer

    p = tmp_path / "mine.csv"
    p.write_text("review,sentiment\n" + "".join(f"note {i},{'very good' if i % 2 else 'very bad'}\n" for i in range(8)))
    task = load_task(TaskConfig(name="mine", data_file=str(p), text_column="review", label_column="sentiment"))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    with pytest.raises(ConfigError, match=r"share a first token.*--label-words.*--head classifier"):
        Featurizer(task, tok, "verbalize", max_length=32)
    Featurizer(task, tok, "classify", max_length=32)  # a classification head reads no label words


def test_a_file_whose_kind_cannot_be_told_names_its_fields_and_the_options(tmp_path):
    p = tmp_path / "pc.jsonl"
    p.write_text('{"prompt": "2+2=", "completion": "4"}\n{"prompt": "3+3=", "completion": "6"}\n'
                 '{"prompt": "4+4=", "completion": "8"}\n')
    with pytest.raises(ConfigError, match=r"pc.jsonl: cannot tell the task kind.*\(fields present: prompt, "
                                          r"completion\)\. Name the columns with --response-column"):
        load_task(TaskConfig(name="pc", data_file=str(p)))
    task = load_task(TaskConfig(name="pc", data_file=str(p), instruction_column="prompt", response_column="completion"))
    assert task.kind == "generation" and sorted(e["response"] for e in task.train + task.dev) == ["4", "6", "8"]


def test_a_json_array_file_is_named_as_such_with_how_to_convert_it(tmp_path):
    """Alpaca-style data comes as one JSON array (.json); the error says so instead of 'found list' at line 1."""
    for text in ('[{"instruction": "a", "response": "b"}]', '[\n  {"instruction": "a", "response": "b"}\n]\n'):
        p = tmp_path / "alpaca.json"
        p.write_text(text)
        with pytest.raises(DataError, match=r"alpaca.json: the file is one JSON array; edgeft reads JSON Lines.*jq"):
            read_jsonl(p)
    p.write_text('[1, 2]\n[3]\n')  # JSON Lines whose lines are arrays: the line's own error
    with pytest.raises(DataError, match=r"alpaca.json:1: expected a JSON object, found list"):
        read_jsonl(p)


def test_a_blank_line_in_json_lines_is_named_as_blank(tmp_path):
    p = tmp_path / "notes.jsonl"
    p.write_text('{"instruction": "a", "response": "b"}\n\n')  # an editor's extra new line at the end
    with pytest.raises(DataError, match=r"notes.jsonl:2: a blank line \(a JSON Lines file has one object on every "
                                        r"line\)\. Fix or remove this line\."):
        read_jsonl(p)


def test_a_classification_file_with_one_label_is_refused(tmp_path):
    """A label column that holds one value (the wrong column, a broken export) trained a 'classifier' that scored
    1.0 on dev without a word."""
    p = tmp_path / "mail.jsonl"
    p.write_text("".join(json.dumps({"text": f"note {i}", "label": "inbox"}) + "\n" for i in range(20)))
    with pytest.raises(DataError, match=r"mail.jsonl: every training row has the label 'inbox'; a classifier needs "
                                        r"at least two labels"):
        load_task(TaskConfig(name="mail", data_file=str(p)))


def test_a_label_column_of_scores_asks_for_the_task_kind(tmp_path):
    """STS-B-like scores (3.8, 2.5) were read as classes: a classifier over every distinct value, or a stop on 'label
    3.867 never appears in the training data' with no word of --task-kind regression."""
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps({"text": f"a {i}", "label": i / 4}) + "\n" for i in range(20)))
    with pytest.raises(ConfigError, match=r"pairs.jsonl: the label column holds 20 distinct numbers with fractions "
                                          r".*set --task-kind regression"):
        load_task(TaskConfig(name="pairs", data_file=str(p)))
    assert load_task(TaskConfig(name="pairs", data_file=str(p), kind="regression")).kind == "regression"
    whole = tmp_path / "stars.jsonl"  # whole numbers stay classes, as do numbers the user calls classes
    whole.write_text("".join(json.dumps({"text": f"a {i}", "label": float(i % 3)}) + "\n" for i in range(20)))
    assert load_task(TaskConfig(name="stars", data_file=str(whole))).label_names == ["0.0", "1.0", "2.0"]
    assert load_task(TaskConfig(name="pairs", data_file=str(p), kind="classification", dev_file=str(p))).num_labels \
        == 20


def test_label_names_given_number_a_files_labels_in_that_order(tmp_path):
    p = tmp_path / "good.jsonl"
    p.write_text("".join(json.dumps({"text": f"a {i}", "label": "good"}) + "\n" for i in range(4)))
    task = load_task(TaskConfig(name="good", data_file=str(p), dev_file=str(p), label_names=["bad", "good"]))
    assert task.label_names == ["bad", "good"] and {ex["label"] for ex in task.train + task.dev} == {1}
    with pytest.raises(DataError, match=r"good.jsonl:1: label 'good' never appears in the adapter's labels"):
        load_task(TaskConfig(name="good", data_file=str(p), dev_file=str(p), label_names=["neg", "pos"]))


def test_an_input_column_no_row_has_is_an_error_not_an_empty_input(tmp_path):
    """--input-column contxt (a typo of ctx) was read as an empty input on every row, without a word."""
    p = tmp_path / "notes.jsonl"
    p.write_text("".join(json.dumps({"question": f"q {i}", "ctx": f"c {i}" if i % 2 else "", "answer": f"a {i}"})
                         + "\n" for i in range(10)))
    cols = {"instruction_column": "question", "response_column": "answer"}
    with pytest.raises(DataError, match=r"notes.jsonl: no row has the input column 'contxt' named by --input-column"):
        load_task(TaskConfig(name="notes", data_file=str(p), input_column="contxt", **cols))
    task = load_task(TaskConfig(name="notes", data_file=str(p), input_column="ctx", dev_file=str(p), **cols))
    assert [ex["input"] for ex in task.train[:2]] == ["", "c 1"]
    assert load_task(TaskConfig(name="notes", data_file=str(p), dev_file=str(p), **cols)).train[1]["input"] == ""
