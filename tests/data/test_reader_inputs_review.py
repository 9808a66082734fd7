"""A user's own files as they come (other encodings, duplicate columns, NaN scores, mixed pairs, a rare label):
each is read whole and right, or refused with an error naming file, line or field and what to do."""

import json

import pytest

from edgeft.data import TaskConfig, load_task
from edgeft.data.readers import read_jsonl, read_table
from edgeft.data.tasks import size_notes
from edgeft.errors import ConfigError, DataError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _own(path, **keys):
    return load_task(TaskConfig(name="mine", data_file=str(path), **keys))


def test_a_duplicate_csv_column_is_refused_not_read_as_its_last_copy(tmp_path):
    p = tmp_path / "dup.csv"
    p.write_text("text,label,text\n" + "".join(f"body {i},{'ab'[i % 2]},note {i}\n" for i in range(6)))
    with pytest.raises(DataError, match=r"dup.csv:1: the header names the column 'text' twice .*rename"):
        read_table(p)


def test_a_trailing_comma_in_the_header_still_reads(tmp_path):
    p = tmp_path / "trail.csv"
    p.write_text("text,label,,\n" + "".join(f"body {i},{'ab'[i % 2]},,\n" for i in range(4)))
    assert [r["text"] for _, r in read_table(p)] == [f"body {i}" for i in range(4)]


def test_a_duplicate_json_key_is_refused_not_read_as_its_last_value(tmp_path):
    p = tmp_path / "dup.jsonl"
    p.write_text('{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg", "label": "pos"}\n')
    with pytest.raises(DataError, match=r"dup.jsonl:2: the key 'label' appears twice"):
        read_jsonl(p)


def test_a_pretty_printed_json_object_says_so_and_how_to_convert(tmp_path):
    p = tmp_path / "pretty.json"
    p.write_text('{\n  "text": "a",\n  "label": "b"\n}\n')
    with pytest.raises(DataError, match=r"pretty.json:1: .*spread over several lines.*jq -c"):
        read_jsonl(p)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_is_named_as_utf16(tmp_path, encoding):
    p = tmp_path / "wide.csv"
    text = "text,label\nfine,a\n"
    p.write_bytes(text.encode(encoding) if encoding == "utf-16" else b"\xfe\xff" + text.encode(encoding))
    with pytest.raises(DataError, match=r"wide.csv: the file is UTF-16 text.*Re-save it as UTF-8"):
        read_table(p)


def test_utf16_without_a_byte_order_mark_is_named_not_read_as_odd_columns(tmp_path):
    p = tmp_path / "wide.csv"
    p.write_bytes("text,label\nfine,a\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"wide.csv:1: NUL character.*UTF-16.*Re-save it as UTF-8"):
        read_table(p)


def test_latin1_names_the_line_of_the_first_bad_byte(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("text,label\nfine,a\nalso fine,b\ncafé,a\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv:4: not valid UTF-8 \(byte 0xe9\).*Re-save the file as UTF-8"):
        read_table(p)


@pytest.mark.parametrize("content, line", [("text,label\nfine,a\n\nnext,b\n", 3), ("text,label\nfine,a\n\n", 3)])
def test_a_blank_csv_line_is_named_as_blank(tmp_path, content, line):
    p = tmp_path / "gap.csv"
    p.write_text(content)
    with pytest.raises(DataError, match=rf"gap.csv:{line}: a blank line"):
        read_table(p)


def test_a_blank_first_line_is_named_not_read_as_a_header_of_no_columns(tmp_path):
    p = tmp_path / "gap.csv"
    p.write_text("\ntext,label\nfine,a\n")
    with pytest.raises(DataError, match=r"gap.csv:1: the first line is blank; it must be the header"):
        read_table(p)


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity"])
def test_a_regression_score_that_is_not_finite_is_refused_naming_its_line(tmp_path, bad):
    p = tmp_path / "scores.csv"
    p.write_text("text,label\n" + "".join(f"row {i},{i / 4}\n" for i in range(6)) + f"broken,{bad}\n")
    with pytest.raises(DataError, match=rf"scores.csv:8: label '{bad}' is not a finite number"):
        _own(p, kind="regression")


def test_a_nan_score_in_json_is_refused_too(tmp_path):
    p = tmp_path / "scores.jsonl"
    p.write_text("".join(json.dumps({"text": f"row {i}", "label": i / 4}) + "\n" for i in range(6))
                 + '{"text": "broken", "label": NaN}\n')
    with pytest.raises(DataError, match=r"scores.jsonl:7: label 'nan' is not a finite number"):
        _own(p, kind="regression")


def test_a_dev_file_of_single_texts_for_pair_training_rows_is_refused(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": f"a{i}", "text2": f"b{i}", "label": i % 2} for i in range(6)])
    dev = _jsonl(tmp_path / "dev.jsonl", [{"text": "a", "text2": "b", "label": 0}, {"text": "c", "label": 1}])
    with pytest.raises(DataError, match=r"dev.jsonl:2: no second text \('text2'\), though the training rows are pairs"):
        _own(train, dev_file=str(dev))


def test_a_dev_file_of_pairs_for_single_training_texts_is_refused(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": f"a{i}", "label": i % 2} for i in range(6)])
    dev = _jsonl(tmp_path / "dev.jsonl", [{"text": "a", "text2": "b", "label": 0}])
    with pytest.raises(DataError, match=r"dev.jsonl:1: a second text \('text2'\), though the training rows have none"):
        _own(train, dev_file=str(dev))


def test_a_second_text_on_a_later_row_only_is_not_dropped(tmp_path):
    p = _jsonl(tmp_path / "mixed.jsonl", [{"text": f"a{i}", "label": i % 2} | ({"text2": "b"} if i == 3 else {})
                                          for i in range(6)])
    with pytest.raises(DataError, match=r"mixed.jsonl:1: no second text \('text2'\), though line 4 has one"):
        _own(p)


def test_matching_dev_pairs_still_read(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": f"a{i}", "text2": f"b{i}", "label": i % 2} for i in range(6)])
    dev = _jsonl(tmp_path / "dev.jsonl", [{"text": "a", "text2": "b", "label": 1}])
    task = _own(train, dev_file=str(dev))
    assert task.is_pair and task.dev[0]["text2"] == "b"


def _rare(tmp_path):
    p = tmp_path / "rare.csv"
    p.write_text("text,label\n" + "".join(f"row {i},a\n" for i in range(9)) + "row 9,b\n")
    return p


def test_a_label_whose_only_row_the_seeded_split_puts_in_dev_is_still_a_class(tmp_path):
    p = _rare(tmp_path)
    seed = 9  # this seed sends line 11 (the one 'b') to dev
    task = _own(p, seed=seed)
    assert task.label_names == ["a", "b"]
    assert [ex["label"] for ex in task.dev] == [1]
    assert sorted(ex["text"] for ex in task.train + task.dev) == sorted(f"row {i}" for i in range(10))


def test_a_file_of_one_label_is_still_refused_when_split(tmp_path):
    p = tmp_path / "one.csv"
    p.write_text("text,label\n" + "".join(f"row {i},a\n" for i in range(10)))
    with pytest.raises(DataError, match=r"one.csv: every training row has the label 'a'"):
        _own(p)


def test_numeric_labels_are_classes_in_order_of_value_so_label_words_meet_their_labels(tmp_path):
    p = tmp_path / "stars.csv"
    p.write_text("text,label\n" + "".join(f"review {i},{[1, 2, 10][i % 3]}\n" for i in range(9)))
    task = _own(p, dev_file=str(p), label_words=["one", "two", "ten"])
    assert task.label_names == ["1", "2", "10"]
    assert {ex["text"]: task.label_words[ex["label"]] for ex in task.train}["review 2"] == " ten"


def test_text_labels_keep_their_text_order(tmp_path):
    p = tmp_path / "mixed.csv"
    p.write_text("text,label\n" + "".join(f"row {i},{['10', '2', 'b'][i % 3]}\n" for i in range(9)))
    assert _own(p, dev_file=str(p)).label_names == ["10", "2", "b"]


def test_utf32_is_named_as_utf32(tmp_path):
    p = tmp_path / "wide.csv"
    p.write_bytes("text,label\nfine,a\n".encode("utf-32"))
    with pytest.raises(DataError, match=r"wide.csv: the file is UTF-32 text"):
        read_table(p)


def test_a_semicolon_separated_csv_is_named_as_such(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_text("text;label\nfine;a\nalso fine;b\n")
    with pytest.raises(DataError, match=r"excel.csv:1: .*semicolon-separated.*Re-save it with commas"):
        read_table(p)


def test_an_unquoted_comma_says_to_quote_the_field(tmp_path):
    p = tmp_path / "comma.csv"
    p.write_text("text,label\nfine,a\nhello, world,b\n")
    with pytest.raises(DataError, match=r'comma.csv:3: expected 2 columns .*found 3 \(a field that holds a comma must '
                                        r'be in double quotes'):
        read_table(p)


@pytest.mark.parametrize("name, content, keys, main", [
    ("mrpc.csv", "text,label\n" + "".join(f"row {i},{i / 4}\n" for i in range(12)), {"kind": "regression"}, "pearson"),
    ("mrpc.csv", "text,label\n" + "".join(f"row {i},{'abc'[i % 3]}\n" for i in range(12)), {}, "accuracy"),
    ("gsm8k.csv", "text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(12)), {}, "accuracy"),
    ("regression.csv", "text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(12)), {}, "accuracy"),
    ("cola.jsonl", "".join(f'{{"instruction": "q{i}", "response": "r{i}"}}\n' for i in range(12)), {}, "rougeL"),
])
def test_a_users_file_named_like_a_bundled_task_is_scored_as_what_it_holds(tmp_path, name, content, keys, main):
    p = tmp_path / name
    p.write_text(content)
    task = _own(p, dev_file=str(p), **keys)
    refs = [ex["response"] if task.kind == "generation" else ex["label"] for ex in task.dev]
    preds = refs[1:] + refs[:1]  # not all right: MRPC's binary F1 of three classes would fail here
    assert task.metric_name == main and main in task.score(preds, refs)


def test_a_tsv_quoted_by_a_csv_writer_is_refused_not_read_with_its_quotes(tmp_path):
    p = tmp_path / "pandas.tsv"
    p.write_text('text\tlabel\nfine\ta\n"the 5"" screen"\tb\n')  # what pandas' to_csv(sep="\t") writes
    with pytest.raises(DataError, match=r'pandas.tsv:3: a field in double quotes with doubled quotes inside.*'
                                        r'quoting=3\), or as a .csv'):
        read_table(p)


def test_a_quoted_tab_in_a_tsv_says_why_the_row_splits(tmp_path):
    p = tmp_path / "pandas.tsv"
    p.write_text('text\tlabel\n"a\ttab"\tb\n')
    with pytest.raises(DataError, match=r"pandas.tsv:2: expected 2 columns .*found 3 \(a .tsv is read without quote"):
        read_table(p)


def test_bare_quotes_in_a_tsv_stay_text(tmp_path):
    p = tmp_path / "glue.tsv"
    p.write_text('text\tlabel\n"quoted" start\ta\nends "quoted"\tb\n"whole"\tc\n')
    assert [r["text"] for _, r in read_table(p)] == ['"quoted" start', 'ends "quoted"', '"whole"']


def test_a_regression_dev_set_of_one_score_is_named_as_unscorable(tmp_path):
    p = tmp_path / "few.csv"
    p.write_text("text,label\n" + "".join(f"row {i},{i / 4}\n" for i in range(10)))  # 10% split: one dev row
    task = _own(p, kind="regression")
    assert len(task.dev) == 1
    assert any("Pearson and Spearman are undefined" in note for note in size_notes(task))
    assert task.score([0.5], [task.dev[0]["label"]])["pearson"] == 0.0
    varied = _own(p, kind="regression", dev_fraction=0.3)
    assert not size_notes(varied)


def test_a_first_row_without_its_response_is_named_not_an_unknown_kind(tmp_path):
    p = _jsonl(tmp_path / "notes.jsonl", [{"instruction": "a"}, {"instruction": "b", "response": "c"},
                                          {"instruction": "d", "response": "e"}])
    with pytest.raises(DataError, match=r"notes.jsonl:1: missing field 'response', which line 2 has"):
        _own(p)


def test_scores_with_a_decimal_comma_are_named_not_read_as_classes(tmp_path):
    p = _jsonl(tmp_path / "scores.jsonl", [{"text": f"row {i}", "label": f"{i},{i * 3 % 10}"} for i in range(8)])
    with pytest.raises(ConfigError, match=r"scores.jsonl: .*decimal comma \(e.g. 0,0\).*decimal point"):
        _own(p)
    with pytest.raises(DataError, match=r"scores.jsonl:1: label '0,0' is not a number \(write decimals with a point"):
        _own(p, kind="regression")


def test_a_null_optional_input_reads_as_no_input_and_a_null_response_is_still_refused(tmp_path):
    p = _jsonl(tmp_path / "notes.jsonl", [{"instruction": "a", "input": None, "response": "b"},
                                          {"instruction": "c", "input": "ctx", "response": "d"}])
    task = _own(p, dev_file=str(p))
    assert [ex["input"] for ex in task.train] == ["", "ctx"]
    _jsonl(p, [{"instruction": "a", "input": "x", "response": None}, {"instruction": "c", "response": "d"}])
    with pytest.raises(DataError, match=r"notes.jsonl:1: field 'response' is empty"):
        _own(p, dev_file=str(p))


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_bad_byte_far_into_a_file_is_named_on_its_own_line(tmp_path, bom):
    p = tmp_path / "big.csv"
    rows = "".join(f"row number {i} of a long file,a\n" for i in range(2000))  # past any read chunk
    p.write_bytes(bom + ("text,label\n" + rows).encode() + "café,b\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"big.csv:2002: not valid UTF-8 \(byte 0xe9\)"):
        read_table(p)


def test_a_dev_label_the_training_file_lacks_says_what_to_do(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": f"a{i}", "label": "ab"[i % 2]} for i in range(6)])
    dev = _jsonl(tmp_path / "dev.jsonl", [{"text": "a", "label": "a"}, {"text": "c", "label": "c"}])
    with pytest.raises(DataError, match=r"dev.jsonl:2: label 'c' never appears in the training data \(\['a', 'b'\]\); "
                                        r"add training rows with it, or remove this row"):
        _own(train, dev_file=str(dev))


def test_a_folder_or_a_home_relative_path_given_as_the_data_file(tmp_path, monkeypatch):
    """A folder said 'data file not found' (it is there), and a config file's `~/notes.csv` was not expanded."""
    from edgeft.data.readers import read_records

    with pytest.raises(DataError, match=r": a folder, not a data file"):
        read_records(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "notes.csv").write_text("text,label\nfine,a\n")
    assert [r["text"] for _, r in read_records("~/notes.csv")] == ["fine"]
