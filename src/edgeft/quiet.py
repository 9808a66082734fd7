"""Keep the terminal for edgeft's own progress: silence transformers' load reports and progress bars.

Called by every entry point that loads models (the CLI, runtime workers, benchmark scripts).
"""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
