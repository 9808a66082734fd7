"""Where edgeft keeps things on disk: packaged datasets and the user's cache."""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATASETS_DIR = PACKAGE_DIR / "datasets"


def edgeft_home() -> Path:
    """Root of edgeft's cache ($EDGEFT_HOME, default ~/.cache/edgeft)."""
    root = os.environ.get("EDGEFT_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "edgeft")
    return Path(root)


def models_dir() -> Path:
    return edgeft_home() / "models"
