"""torch's deterministic kernels for the length of one run (`train.deterministic`, `finetune --deterministic`).

Some CUDA kernels add floats with atomics, in an order the GPU's scheduling decides, so a seeded run can end
elsewhere than the same run before it. With `train.deterministic` the run uses torch's deterministic kernels
(`torch.use_deterministic_algorithms`), cuDNN's deterministic algorithms without autotuning, and the cuBLAS workspace
setting PyTorch's reproducibility notes ask for: that cause is gone, at a cost in time (PAC on SmolLM2, one H100:
+17%). It is not shown to be the only cause: on a GPU shared by 24 runs, one first run of 54 still parted from its
twins with it on (docs/benchmarks_pac.md, h26). Written here rather than taken from transformers'
`enable_full_determinism`, which also sets CUDA_LAUNCH_BLOCKING=1 (every kernel launch would wait: PAC's cached
epochs are launch-bound) and reseeds (edgeft's trainer seeds on its own). The switches are process-wide, so they
are restored when the run ends.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

from edgeft.errors import ConfigError

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")  # the two values torch accepts as deterministic


@contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """Inside: torch's deterministic kernels (if `on`); an operation that has none is reported as a ConfigError
    naming train.deterministic. Outside: the switches as they were."""
    if not on:
        yield
        return
    cublas = os.environ.get(CUBLAS_ENV)
    if cublas is not None and cublas not in CUBLAS_DETERMINISTIC:
        raise ConfigError(f"train.deterministic: the environment sets {CUBLAS_ENV}={cublas}, with which cuBLAS is "
                          f"not repeatable; unset it or set it to {CUBLAS_DETERMINISTIC[0]}")
    os.environ.setdefault(CUBLAS_ENV, CUBLAS_DETERMINISTIC[0])  # kept: cuBLAS reads it when it makes a workspace
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    except RuntimeError as err:
        if "deterministic" not in str(err):
            raise
        raise ConfigError(f"train.deterministic: {str(err).splitlines()[0]} Run without train.deterministic "
                          "(--deterministic), or with another method or precision that avoids this operation.") from err
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]
