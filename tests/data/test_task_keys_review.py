"""Review fixes: a bundled task refuses the keys that read a user's own file (they were ignored without a word),
and `edgeft eval` refuses a batch size, head or max-new-tokens it cannot use before doing any work."""

import json

import pytest

from edgeft.data import TaskConfig, load_task
from edgeft.data.tasks import OWN_DATA_KEYS, SIZE_KEYS
from edgeft.errors import ConfigError

# One non-default value for each key that reads a user's own file.
GIVEN = {"dev_file": "mydev.jsonl", "kind": "generation", "text_column": "body", "text2_column": "other",
         "label_column": "y", "instruction_column": "q", "input_column": "ctx", "response_column": "a",
         "prompt_template": "{text}", "label_words": ["no", "yes"], "label_names": ["a", "b"], "dev_fraction": 0.3}
BUNDLED = ["sst2", "cola", "mrpc", "rte", "stsb", "dolly", "gsm8k", "wikitext2"]


def test_every_task_key_is_either_a_size_the_task_name_or_a_key_of_own_data():
    """A key added to TaskConfig later must be sorted into one of these, or bundled tasks would ignore it again."""
    assert set(TaskConfig.model_fields) == {"name", "data_file", *SIZE_KEYS, *OWN_DATA_KEYS}
    assert set(GIVEN) == set(OWN_DATA_KEYS)


@pytest.mark.parametrize("key", sorted(GIVEN))
def test_a_bundled_task_refuses_each_key_of_own_data_naming_it(key):
    option = OWN_DATA_KEYS[key]
    with pytest.raises(ConfigError) as err:
        load_task(TaskConfig(name="sst2", **{key: GIVEN[key]}))
    msg = str(err.value)
    assert f"task 'sst2': {key}" in msg and "--data-file" in msg
    if option:
        assert f"({option})" in msg


@pytest.mark.parametrize("name", [*BUNDLED, "SST-2", "dolly15k"])
def test_every_bundled_task_and_alias_refuses_them(name):
    with pytest.raises(ConfigError, match=r"dev_file \(--dev-file\), kind \(--task-kind\), text_column "
                                          r"\(--text-column\) are for your own data file"):
        load_task(TaskConfig(name=name, dev_file="mydev.jsonl", kind="generation", text_column="body"))


def test_a_bundled_task_takes_the_keys_at_their_defaults_given_or_not():
    defaults = {k: TaskConfig.model_fields[k].default for k in OWN_DATA_KEYS}
    task = load_task(TaskConfig(name="rte", train_samples=4, dev_samples=2, **defaults))
    assert task.name == "rte" and len(task.train) == 4 and len(task.dev) == 2
    assert load_task(TaskConfig(name="rte", train_samples=4, dev_samples=2)).dev == task.dev


def test_a_users_file_still_takes_them(tmp_path):
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    for path, n in ((train, 6), (dev, 2)):
        path.write_text("".join(json.dumps({"body": f"t{i}", "y": "ab"[i % 2]}) + "\n" for i in range(n)))
    task = load_task(TaskConfig(name="mine", data_file=str(train), dev_file=str(dev), kind="classification",
                                text_column="body", label_column="y", label_names=["a", "b"],
                                label_words=["no", "yes"], prompt_template="Q: {text}"))
    assert len(task.dev) == 2 and task.label_names == ["a", "b"] and task.prompt_template == "Q: {text}"


def _invoke(*args):
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    return CliRunner().invoke(build_app(), [str(a) for a in args])


def _refused(result, message: str) -> None:
    assert isinstance(result.exception, ConfigError), (result.exception, result.output)
    assert message in str(result.exception)


def test_eval_refuses_own_data_keys_on_a_bundled_task(tmp_path):
    dev = tmp_path / "mydev.jsonl"
    dev.write_text(json.dumps({"body": "x", "instruction": "a", "response": "b"}) + "\n")
    result = _invoke("eval", "--model", "no-such-model-xyz", "--task", "sst2", "--dev-file", dev,
                     "--task-kind", "generation", "--text-column", "body")
    _refused(result, "task 'sst2': dev_file (--dev-file), kind (--task-kind), text_column (--text-column) are for "
                     "your own data file")


def test_finetune_refuses_own_data_keys_on_a_bundled_task_before_writing_its_folder(tmp_path):
    out = tmp_path / "run"
    result = _invoke("finetune", "--model", "no-such-model-xyz", "--task", "dolly", "--response-column", "answer",
                     "--out", out)
    _refused(result, "task 'dolly': response_column (--response-column) is for your own data file")
    assert not out.exists()


# The model is never looked at: each of these is refused before the task or the model is loaded (else the
# message would be the unknown model's).
@pytest.mark.parametrize("args, message", [
    (["--batch-size", "-1"], "--batch-size -1: must be at least 1."),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1."),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: must be at least 1."),
    (["--max-new-tokens", "-3"], "--max-new-tokens -3: must be at least 1."),
    (["--head", "foo"], "--head 'foo': must be one of auto, lm, classifier."),
    (["--head", "foo", "--adapter", "no-such-adapter"], "--head 'foo': must be one of auto, lm, classifier."),
])
def test_eval_refuses_unusable_numbers_and_heads_first(args, message):
    _refused(_invoke("eval", "--model", "no-such-model-xyz", "--task", "dolly", *args), message)


def test_head_for_refuses_an_unknown_head_for_every_caller():
    from edgeft.train.setup import HEADS, head_for

    assert HEADS == ("auto", "lm", "classifier")
    task = load_task(TaskConfig(name="rte", train_samples=2, dev_samples=2))
    with pytest.raises(ConfigError, match="--head 'classifer': must be one of auto, lm, classifier"):
        head_for("no-such-model-xyz", task, "classifer")
    assert head_for("no-such-model-xyz", task, "lm") == "causal_lm"
    assert head_for("no-such-model-xyz", task, "classifier") == "sequence_classification"


def test_eval_with_valid_values_gets_past_the_checks():
    """The checks pass the defaults and in-range values: the next error is the unknown model."""
    result = _invoke("eval", "--model", "no-such-model-xyz", "--task", "rte", "--dev-samples", "2", "--batch-size",
                     "1", "--max-new-tokens", "1", "--head", "classifier")
    assert "no-such-model-xyz" in str(result.exception)
