"""Keep the terminal for edgeft's own progress: silence transformers' load reports and progress bars, and
the third-party deprecation notices a user can do nothing about (each named below, so a new one shows).

Called by every entry point that loads models (the CLI, runtime workers, benchmark scripts).
"""

from __future__ import annotations

import logging
import os
import warnings

# (category, message regex, module regex): warnings raised inside libraries on every normal run.
LIBRARY_WARNINGS = [
    # peft reads model.is_gradient_checkpointing, which transformers 5 renamed
    (FutureWarning, r".*`is_gradient_checkpointing` is deprecated", r""),
    # peft's prompt tuning drops the position ids generate() passes; nothing for a user to change
    (UserWarning, r"Position ids are not supported for parameter efficient tuning", r"peft"),
    # Ray's own modules, in the driver and in the Flower simulation's worker processes
    (FutureWarning, r"", r"ray(\.|$)"),
    (DeprecationWarning, r"", r"ray(\.|$)"),
    # torch's forward-mode AD (fwdgrad's jvp) scripts its decompositions on first use; shown in a Flower client,
    # whose Ray worker turns DeprecationWarnings on
    (DeprecationWarning, r"`torch\.jit\.script` is deprecated", r"torch\.jit"),
]
# The same for processes Ray starts, in -W syntax: its accelerator tip and its metric-name notice.
WORKER_WARNINGS = ["ignore:Tip:FutureWarning", "ignore:Metric name:FutureWarning"]
# Flower logs (not warns) that run_simulation is deprecated (edgeft builds on it on purpose), that it stops
# its client actors at the end of every simulation, and that FedIT's strategy skips Flower's client-side
# evaluation (edgeft's server evaluates the global model itself).
FLOWER_NOTICES = ("`run_simulation` function is deprecated", "Manually terminating ClientAppActor",
                  "fraction_evaluate is set to 0.0")


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in FLOWER_NOTICES)


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for category, message, module in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    # Ray's worker processes inherit the environment, not this process's filters (-W matches a message's start)
    have = os.environ.get("PYTHONWARNINGS", "")
    extra = [w for w in WORKER_WARNINGS if w not in have.split(",")]
    if extra:
        os.environ["PYTHONWARNINGS"] = ",".join([have] * bool(have) + extra)
    flwr = logging.getLogger("flwr")
    if not any(isinstance(f, _DropNotices) for f in flwr.filters):
        flwr.addFilter(_DropNotices())
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
