"""Where edgeft keeps things on disk: packaged datasets and the user's cache; a folder written whole or not at all."""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATASETS_DIR = PACKAGE_DIR / "datasets"


def edgeft_home() -> Path:
    """Root of edgeft's cache ($EDGEFT_HOME, default ~/.cache/edgeft)."""
    root = os.environ.get("EDGEFT_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "edgeft")
    return Path(root)


def models_dir() -> Path:
    return edgeft_home() / "models"


@contextmanager
def written_whole(out: Path):
    """Yield `<out>.partial` to write a folder into; once the block ends normally it replaces `out`, else it is
    removed. A writer stopped part way (Ctrl-C, out of memory, a full disk) leaves `out` as it was, never a truncated
    file under the name a loader is given; the earlier `out` is moved aside only once the new one is whole."""
    out = Path(out)
    partial, old = out.with_name(out.name + ".partial"), out.with_name(out.name + ".replaced")
    for stale in (partial, old):  # left by a writer killed outright (SIGKILL) before it could clean up
        _remove(stale)
    partial.mkdir(parents=True)
    try:
        yield partial
        if out.exists():
            out.rename(old)
        partial.rename(out)
    except BaseException:
        if old.exists() and not out.exists():
            old.rename(out)
        _remove(partial)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
