"""Merging fine-tuning results into a deployable model, and refusing adapters that do not belong."""

import pytest
import torch

from edgeft.compress.export import export_model
from edgeft.compress.source import open_model
from edgeft.errors import ModelError
from edgeft.models import load_backbone

from tiny_models import COMPRESS_LLAMA, make_llama
from .helpers import logits_of, make_adapter


def test_lora_merge_gives_the_peft_models_logits(tiny_word_llama, tmp_path):
    from peft import PeftModel

    adapter = make_adapter(tiny_word_llama, tmp_path / "lora")
    peft_model = PeftModel.from_pretrained(load_backbone(str(tiny_word_llama)).model, str(adapter)).eval()
    merged = open_model(str(tiny_word_llama), adapter)
    assert not hasattr(merged.backbone.model, "peft_config")
    assert torch.allclose(logits_of(merged.backbone.model), logits_of(peft_model), atol=1e-4)
    assert not torch.allclose(logits_of(merged.backbone.model), logits_of(load_backbone(str(tiny_word_llama)).model),
                              atol=1e-3)
    assert merged.manifest.source["adapter_note"]["method"] == "lora"


def test_bitfit_merge_exports_to_a_plain_transformers_folder(tiny_word_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tiny_word_llama, tmp_path / "bitfit", "bitfit")
    merged = open_model(str(tiny_word_llama), adapter)
    info = export_model(str(tiny_word_llama), tmp_path / "hf", "safetensors", adapter=str(adapter), dtype="float32")
    reloaded = AutoModelForCausalLM.from_pretrained(info["path"]).eval()
    assert reloaded.config.attention_bias and reloaded.config.mlp_bias
    assert torch.allclose(logits_of(reloaded), logits_of(merged.backbone.model), atol=1e-5)


def test_prompt_tuning_is_kept_beside_the_model_and_gguf_refuses_it(tiny_word_llama, tmp_path):
    adapter = make_adapter(tiny_word_llama, tmp_path / "prompt", "prompt")
    src = open_model(str(tiny_word_llama), adapter)
    assert src.side_module == adapter
    with pytest.raises(ModelError, match="cannot be merged"):
        export_model(str(tiny_word_llama), tmp_path / "hf", "safetensors", adapter=str(adapter))
    with pytest.raises(ModelError, match="side network"):
        export_model(str(tiny_word_llama), tmp_path / "m.gguf", "gguf", adapter=str(adapter))


def test_adapter_for_another_backbone_is_refused(tiny_word_llama, tmp_path, smol_tokenizer):
    adapter = make_adapter(tiny_word_llama, tmp_path / "lora")
    other = make_llama(tmp_path / "other", smol_tokenizer, **{**COMPRESS_LLAMA, "layers": 2}, seed=3)
    with pytest.raises(ModelError, match="trained on backbone"):
        open_model(str(other), adapter)


def test_missing_or_foreign_adapter_folder_is_clear(tiny_word_llama, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not an edgeft adapter folder"):
        open_model(str(tiny_word_llama), tmp_path / "empty")


def test_adapter_cannot_be_merged_into_a_compressed_model(tiny_word_llama, tmp_path):
    from edgeft.compress.pipeline import CompressConfig, run_compress

    run_compress(CompressConfig(model=str(tiny_word_llama), method="merge", out=str(tmp_path / "m"),
                                eval_wikitext_windows=0, eval_before=False), log=lambda m: None)
    adapter = make_adapter(tiny_word_llama, tmp_path / "lora")
    with pytest.raises(ModelError, match="already compressed"):
        open_model(str(tmp_path / "m"), adapter)


def test_an_adapter_trained_on_your_own_file_merges_without_that_file(tiny_word_llama, tmp_path):
    """The adapter's note keeps the task's shape (kind, labels, prompt, pairs): merging, exporting and chatting
    need no training file, which may have moved; before, a user-file adapter failed with 'unknown task'."""
    import json

    rows = [{"instruction": f"say {w}", "input": "", "response": w} for w in ("the", "a", "of", "and")]
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    adapter = make_adapter(tiny_word_llama, tmp_path / "bitfit", "bitfit", task_name=str(data))
    note = json.loads((adapter / "edgeft_adapter.json").read_text())
    assert note["task"] == "notes" and note["task_shape"]["kind"] == "generation"
    data.unlink()
    merged = open_model(str(tiny_word_llama), adapter)
    assert not torch.allclose(logits_of(merged.backbone.model), logits_of(load_backbone(str(tiny_word_llama)).model),
                              atol=1e-4)  # the trained biases are in


def test_an_old_note_of_a_user_file_task_is_a_clear_error(tiny_word_llama, tmp_path):
    import json

    adapter = make_adapter(tiny_word_llama, tmp_path / "bitfit", "bitfit")
    path = adapter / "edgeft_adapter.json"
    note = json.loads(path.read_text())
    del note["task_shape"]
    path.write_text(json.dumps({**note, "task": "my_notes"}))
    with pytest.raises(ModelError, match="not a bundled task.*train it again"):
        open_model(str(tiny_word_llama), adapter)
