import pytest
import torch

from edgeft.errors import ModelError
from edgeft.models import load_backbone


@pytest.mark.parametrize("family,head", [("llama", "causal_lm"), ("llama", "sequence_classification"),
                                         ("bert", "sequence_classification")])
def test_blockview_equals_hf_forward_and_slices_compose(family, head, tiny_llama, tiny_bert):
    bb = load_backbone(str(tiny_llama if family == "llama" else tiny_bert), head=head)
    enc = bb.tokenizer(["the film was good", "bad"], padding=True, return_tensors="pt")
    view = bb.view
    with torch.no_grad():
        ref = bb.model(**enc).logits
        mine = view.forward(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
        h = view.embed(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
        h = view.run_blocks(h, 0, 2, enc["attention_mask"])
        h = view.run_blocks(h, 2, view.num_blocks, enc["attention_mask"])
        sliced = view.final(h, enc["attention_mask"])
    mask = enc["attention_mask"].bool()
    pick = (lambda t: t[mask]) if ref.dim() == 3 else (lambda t: t)
    assert torch.allclose(pick(ref), pick(mine), atol=1e-5)
    assert torch.allclose(pick(sliced), pick(mine), atol=1e-6)
    counts = view.block_param_counts()
    assert len(counts) == view.num_blocks == 4 and len(set(counts)) == 1
    total = sum(p.numel() for p in bb.model.parameters())
    assert view.embed_param_count() + sum(counts) + view.final_param_count() <= total


def test_unknown_alias_offline_is_clear(monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub reads the variable when first imported; once the suite has imported it (any earlier test),
    # only the constant makes the lookup offline (otherwise it asks the network: 23 s in one CI run, 1 s here)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="unknown model 'smollm9-1t'.*alias"):
        load_backbone("smollm9-1t")


def test_missing_local_folder_is_clear(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        load_backbone(str(tmp_path / "nothing-here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_backbone(str(tmp_path / "empty"))


def test_a_folder_whose_weights_lack_backbone_tensors_is_refused_not_started_at_random(tiny_llama, tmp_path):
    """transformers starts missing tensors at random and says so only in its log; only a new task head may be new."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "cut"
    shutil.copytree(tiny_llama, folder)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for head in ("causal_lm", "sequence_classification"):
        with pytest.raises(ModelError, match=r"cut: the weights lack 1 of the model's tensors "
                                             r"\(model.layers.1.mlp.up_proj.weight\); transformers would start"):
            load_backbone(str(folder), head=head)
    load_backbone(str(tiny_llama), head="sequence_classification")  # only the new score head is missing: fine


def test_an_unfinished_compress_output_is_refused_with_what_to_do(tiny_word_llama, tmp_path):
    from edgeft.compress.pipeline import CompressConfig, run_compress

    out = tmp_path / "q"
    run_compress(CompressConfig(model=str(tiny_word_llama), method="rtn", options={"bits": 4}, out=str(out),
                                calib_samples=4, calib_seq_len=32, eval_wikitext_windows=0, eval_before=False,
                                eval_task="none", dtype="float32"), log=lambda m: None)
    (out / "edgeft_compress.json").unlink()  # what a step cut short before its last file leaves
    with pytest.raises(ModelError, match=r"edgeft-compressed weights but no edgeft_compress.json.*--overwrite"):
        load_backbone(str(out))


def test_encoder_cannot_be_a_causal_lm(tiny_bert):
    with pytest.raises(ModelError, match="encoder"):
        load_backbone(str(tiny_bert), head="causal_lm")


@pytest.mark.slow
def test_real_backbones_have_the_documented_shapes():
    smol = load_backbone("smollm2-135m")
    assert (smol.arch.family, smol.arch.num_layers, smol.arch.hidden_size) == ("llama", 30, 576)
    mini = load_backbone("minilm-l6", head="sequence_classification")
    assert (mini.arch.family, mini.arch.num_layers, mini.arch.hidden_size) == ("bert", 6, 384)
    enc = mini.tokenizer(["a fine film"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(mini.model(**enc).logits, mini.view.forward(**enc), atol=1e-5)


FIRST_LOAD = """
import gc, sys, weakref
gc.disable()  # as between two of the cycle collector's rare full passes
from edgeft.models import load_backbone


class Marker:
    pass


def caller():
    mine = Marker()  # stands for what a caller holds while loading: its model, data, device cache
    load_backbone(sys.argv[1])
    return weakref.ref(mine)


print("held" if caller()() is not None else "freed")
"""


def test_a_first_model_load_does_not_keep_its_callers_frame_alive(tiny_llama):
    """A process's first load imports torch._dynamo (through transformers' masking utilities), whose import calls
    torch.fx.wrap: its frame holds itself and, through f_back, the caller's frame, until the cycle collector runs.
    load_backbone collects that cycle, so what the caller holds goes when the caller returns. Run in a fresh
    interpreter, where that import is still to come."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FIRST_LOAD, str(tiny_llama)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["freed"]
