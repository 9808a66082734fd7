"""`export --check` without llama-cpp-python stops before writing anything."""

import sys

import pytest

from edgeft.errors import ConfigError


def test_export_check_without_llama_cpp_writes_no_file(tmp_path, tiny_smol, monkeypatch):
    """It wrote the GGUF, then stopped on the missing package; once installed, the same command was refused
    ('already exists: pass --overwrite')."""
    from edgeft.compress.export import export_model

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    out = tmp_path / "m.gguf"
    with pytest.raises(ConfigError, match="llama-cpp-python is not installed"):
        export_model(str(tiny_smol), out, "gguf", check=True)
    assert not out.exists() and not list(tmp_path.iterdir())
