"""Where edgeft keeps things on disk: packaged datasets and the user's cache; a folder written whole or not at all."""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATASETS_DIR = PACKAGE_DIR / "datasets"


def file_in_the_way(path: str | Path, itself: bool = True) -> Path | None:
    """The nearest of `path` (when `itself`) and its parents that exists and is not a folder: an output there fails
    only when it is written, with a bare NotADirectoryError or FileExistsError. None when nothing is in the way."""
    path = Path(path)
    return next((p for p in ((path,) if itself else ()) + tuple(path.parents) if p.exists() and not p.is_dir()),
                None)


def edgeft_home() -> Path:
    """Root of edgeft's cache ($EDGEFT_HOME, default ~/.cache/edgeft)."""
    root = os.environ.get("EDGEFT_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "edgeft")
    return Path(root)


def models_dir() -> Path:
    return edgeft_home() / "models"


@contextmanager
def written_whole(out: Path, only: tuple[str, ...] | None = None):
    """Yield `<out>.partial` to write a folder into; once the block ends normally it replaces `out`, else it is
    removed. A writer stopped part way (Ctrl-C, out of memory, a full disk) leaves `out` as it was, never a truncated
    file under the name a loader is given; the earlier `out` is moved aside only once the new one is whole.

    With `only` (glob patterns of the files the writer owns), `out` may also hold the user's own files: those stay,
    and only the entries matching `only` are swapped for the new ones (each a rename, so the swap takes
    milliseconds whatever the files' size; if it fails part way, the earlier entries are put back)."""
    out = Path(out)
    partial, old = out.with_name(out.name + ".partial"), out.with_name(out.name + ".replaced")
    for stale in (partial, old):  # left by a writer killed outright (SIGKILL) before it could clean up
        _remove(stale)
    partial.mkdir(parents=True)
    try:
        yield partial
        if only is None:
            if out.exists():
                out.rename(old)
            partial.rename(out)
        else:
            _swap_entries(partial, out, old, only)
    except BaseException:
        if only is None and old.exists() and not out.exists():
            old.rename(out)
        _remove(partial)
        raise
    _remove(old)


def _swap_entries(new: Path, out: Path, old: Path, only: tuple[str, ...]) -> None:
    """Move `out`'s entries matching `only` into `old`, then `new`'s entries into `out`; undone on a failure."""
    out.mkdir(parents=True, exist_ok=True)
    old.mkdir()
    earlier = sorted({e.name for pattern in only for e in out.glob(pattern)})
    moved_in: list[str] = []
    try:
        for name in earlier:
            (out / name).rename(old / name)
        for entry in sorted(new.iterdir()):
            entry.rename(out / entry.name)
            moved_in.append(entry.name)
    except BaseException:
        for name in moved_in:
            _remove(out / name)
        for entry in old.iterdir():
            entry.rename(out / entry.name)
        raise
    _remove(new)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
