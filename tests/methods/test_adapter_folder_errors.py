"""A damaged adapter folder, or an adapter whose classifier head does not fit the task, is an edgeft error that names
the folder, the file and what to do: never a raw JSON, safetensors or torch exception, and never a trip to the Hub."""

import json
import shutil

import pytest

from edgeft.data import TaskConfig, load_task
from edgeft.data.tasks import Task
from edgeft.errors import ModelError
from edgeft.methods import get_method
from edgeft.methods.base import check_adapter_fits_task, read_adapter_note, save_adapter
from edgeft.models import load_backbone
from edgeft.train.recipe import load_for_eval

FIX = "re-run the fine-tune"


def _task(name: str):
    return load_task(TaskConfig(name=name, train_samples=8, dev_samples=4, max_length=24))


def _adapter(out, model_path, method: str, options: dict | None = None):
    """An SST-2 adapter folder as `edgeft finetune --out R` writes it (R/adapter): untrained weights and the note."""
    task = _task("sst2")
    bb = load_backbone(str(model_path), head="sequence_classification", num_labels=task.num_labels)
    m = get_method(method, options)
    return save_adapter(out, m, m.prepare(bb, task), bb, task)


@pytest.fixture(scope="module")
def lora_adapter(sst2_bert, tmp_path_factory):
    return _adapter(tmp_path_factory.mktemp("lora") / "adapter", sst2_bert, "lora")


@pytest.fixture(scope="module")
def pac_adapter(sst2_bert, tmp_path_factory):
    return _adapter(tmp_path_factory.mktemp("pac") / "adapter", sst2_bert, "pac",
                    {"cache": "off", "cache_dtype": "fp32"})


@pytest.fixture
def no_hub(monkeypatch):
    """PEFT reads a file missing from a local folder from the Hub: make any such attempt fail the test at once."""
    import peft.config
    import peft.utils.save_and_load

    def refuse(*args, **kwargs):
        raise AssertionError(f"reached for the Hugging Face Hub: {args} {kwargs}")

    for module in (peft.config, peft.utils.save_and_load):
        if hasattr(module, "hf_hub_download"):
            monkeypatch.setattr(module, "hf_hub_download", refuse)


def _copy(adapter, tmp_path):
    return shutil.copytree(adapter, tmp_path / "run" / "adapter")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if path.suffix == ".json" else data[:5])


def _cut_tail(path):
    path.write_bytes(path.read_bytes()[:-16])


def test_a_good_adapter_loads(lora_adapter, sst2_bert, tmp_path, no_hub):
    load_for_eval(str(sst2_bert), _task("sst2"), "auto", _copy(lora_adapter, tmp_path))


@pytest.mark.parametrize("damage,match", [
    (_truncate, "edgeft_adapter.json cannot be read as JSON"),
    (lambda p: p.write_text("{}"), "edgeft_adapter.json lacks 'method'"),
    (lambda p: p.write_text("[1, 2]"), "edgeft_adapter.json holds a list, not a JSON object"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "head": None})),
     "edgeft_adapter.json has a NoneType for 'head'"),
    (lambda p: p.unlink(), "not an edgeft adapter folder"),
])
def test_a_damaged_adapter_note_is_a_model_error(damage, match, lora_adapter, sst2_bert, tmp_path):
    adapter = _copy(lora_adapter, tmp_path)
    damage(adapter / "edgeft_adapter.json")
    with pytest.raises(ModelError, match=match) as err:
        load_for_eval(str(sst2_bert), _task("sst2"), "auto", adapter)
    assert str(adapter) in str(err.value) and FIX in str(err.value)
    with pytest.raises(ModelError, match=match):
        read_adapter_note(adapter)


@pytest.mark.parametrize("name,damage,match", [
    ("adapter_model.safetensors", lambda p: p.unlink(), "adapter_model.safetensors is missing"),
    ("adapter_model.safetensors", _truncate, "adapter_model.safetensors cannot be read as safetensors"),
    ("adapter_model.safetensors", _cut_tail, "adapter_model.safetensors cannot be read as safetensors"),
    ("adapter_config.json", lambda p: p.unlink(), "adapter_config.json is missing"),
    ("adapter_config.json", _truncate, "adapter_config.json cannot be read as JSON"),
    ("adapter_config.json", lambda p: p.write_text("[1, 2]"), "adapter_config.json holds a list"),
])
def test_a_damaged_peft_adapter_is_a_model_error_without_the_hub(name, damage, match, lora_adapter, sst2_bert,
                                                                   tmp_path, no_hub):
    adapter = _copy(lora_adapter, tmp_path)
    damage(adapter / name)
    with pytest.raises(ModelError, match=match) as err:
        load_for_eval(str(sst2_bert), _task("sst2"), "auto", adapter)
    assert str(adapter / name) in str(err.value) and FIX in str(err.value)


@pytest.mark.parametrize("name,damage,match", [
    ("pac.safetensors", lambda p: p.unlink(), "pac.safetensors is missing"),
    ("pac.safetensors", _truncate, "pac.safetensors cannot be read as safetensors"),
    ("pac.safetensors", _cut_tail, "pac.safetensors cannot be read as safetensors"),
    ("pac.json", lambda p: p.unlink(), "pac.json is missing"),
    ("pac.json", _truncate, "pac.json cannot be read as JSON"),
    ("pac.json", lambda p: p.write_text("[1, 2]"), "pac.json holds a list"),
])
def test_a_damaged_pac_adapter_is_a_model_error(name, damage, match, pac_adapter, sst2_bert, tmp_path):
    adapter = _copy(pac_adapter, tmp_path)
    load_for_eval(str(sst2_bert), _task("sst2"), "auto", adapter)  # whole, it loads
    damage(adapter / name)
    with pytest.raises(ModelError, match=match) as err:
        load_for_eval(str(sst2_bert), _task("sst2"), "auto", adapter)
    assert str(adapter / name) in str(err.value) and FIX in str(err.value)


def _regression_note(note: dict) -> dict:
    """The note of an STS-B adapter: a one-output regression head."""
    return {**note, "num_labels": 1, "task": "stsb",
            "task_shape": {**note["task_shape"], "name": "stsb", "kind": "regression", "label_names": [],
                           "metric_name": "pearson", "pair": True}}


def _rowless(name, kind, labels=()):
    return Task(name=name, kind=kind, train=[], dev=[], metric_name="accuracy", label_names=list(labels))


def test_a_head_that_does_not_fit_the_task_is_refused(lora_adapter):
    note = read_adapter_note(lora_adapter)  # SST-2: two classes
    check_adapter_fits_task(note, _task("sst2"), lora_adapter)
    check_adapter_fits_task(note, _rowless("mine", "classification", ["a", "b"]), lora_adapter)  # another 2-class task
    with pytest.raises(ModelError, match=r"trained on 'sst2', classification into 2 classes: negative, positive .*"
                                         r"task 'stsb' is regression \(one score\)") as err:
        check_adapter_fits_task(note, _task("stsb"), lora_adapter)
    assert "edgeft_adapter.json" in str(err.value) and "--task sst2" in str(err.value)
    assert "edgeft finetune --task stsb" in str(err.value)
    with pytest.raises(ModelError, match="task 'three' is classification into 3 classes"):
        check_adapter_fits_task(note, _rowless("three", "classification", ["a", "b", "c"]), lora_adapter)
    with pytest.raises(ModelError, match=r"task 'dolly' is generation \(no classifier head\)"):
        check_adapter_fits_task(note, _rowless("dolly", "generation"), lora_adapter)

    stsb = _regression_note(note)
    check_adapter_fits_task(stsb, _task("stsb"), lora_adapter)
    with pytest.raises(ModelError, match=r"trained on 'stsb', regression \(one score\).*task 'sst2' is classification "
                                         "into 2 classes"):
        check_adapter_fits_task(stsb, _task("sst2"), lora_adapter)
    old = {k: v for k, v in stsb.items() if k != "task_shape"}  # a note from before task shapes were recorded
    with pytest.raises(ModelError, match="regression"):
        check_adapter_fits_task(old, _task("sst2"), lora_adapter)
    lm = {**note, "head": "causal_lm"}  # classification by label words: no head sized for the task
    check_adapter_fits_task(lm, _task("stsb"), lora_adapter)


def test_eval_of_an_adapter_on_a_task_of_another_shape_is_refused(lora_adapter, sst2_bert, tmp_path):
    """`edgeft eval --task stsb --adapter <an SST-2 adapter>` (and the reverse) stop before torch's size errors."""
    with pytest.raises(ModelError, match="cannot score it"):
        load_for_eval(str(sst2_bert), _task("stsb"), "auto", lora_adapter)
    adapter = _copy(lora_adapter, tmp_path)
    note = adapter / "edgeft_adapter.json"
    note.write_text(json.dumps(_regression_note(json.loads(note.read_text()))))
    with pytest.raises(ModelError, match="cannot score it"):
        load_for_eval(str(sst2_bert), _task("sst2"), "auto", adapter)
