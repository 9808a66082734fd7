"""The compiled training step (TrainConfig.compile, `edgeft finetune --compile`): torch.compile on the model's
forward for the backprop methods (full, LoRA, prompt tuning, BitFit), with batches padded to length buckets.

- What is compiled: the model's forward, through `torch.compile(model, mode=..., dynamic=False)`. AOTAutograd
  compiles the matching backward. The loss (edgeft.train.objective) and the optimizer step stay eager: the
  optimizer is already one fused kernel on CUDA (edgeft.train.optim). `reduce-overhead` also replays the forward
  and backward as CUDA graphs (torch's cudagraph trees); on a CPU it is `default` (there are no graphs there).
- Static shapes: every batch is padded to a multiple of `bucket` tokens (TrainConfig.compile_bucket, 16 by
  default; capped at the featurizer's max_length, so a bucket >= max_length gives one width), so a run compiles
  one graph per length bucket it meets and no more. The padding is masked (attention mask 0, labels -100), so
  the loss is the unpadded one up to float rounding. The epoch's short last batch gets filler rows up to the batch
  size instead of a graph of its own: each filler row attends to one pad token and has label -100, which the
  cross-entropy losses ignore, so the mean loss and the gradients are the real rows' (not dropped: every sample is
  still trained on). Regression's MSE has no ignored label: there the short batch is one more shape, compiled once
  and reused in every later epoch. So at most ceil(max_length / bucket) graphs (twice that for regression), and
  dynamo's recompile limit is raised to the bound.
- Compile time (inductor, and the graphs' recording) lands in the steps that meet a shape first, so it is part of
  epoch 1's wall time; `CompiledForward.report()` also gives it separately.
- Not for PAC: its cached epochs never run the backbone, and its own `graphs` option already replays the cached
  step as CUDA graphs (edgeft.methods.pac.graphs); compiling the PAC model would compile the cache lookup by
  sample id. Nor for MeZO/FwdGrad, whose steps call the model under perturbations and functional transforms of
  their own. Both are refused (ConfigError) rather than silently run eager.
- Needs a C++ compiler on a CPU (inductor builds C++ kernels), Triton on CUDA, and torch 2.7 or newer (transformers'
  models call torch.compiler.is_exporting, new in 2.7); refused clearly otherwise.
"""

from __future__ import annotations

import math
import os
import shutil
from typing import Literal, get_args

import torch

from edgeft.errors import ConfigError

CompileMode = Literal["off", "default", "reduce-overhead"]
COMPILE_MODES = get_args(CompileMode)
LENGTH_BUCKET = 16
PAD_VALUES = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0, "labels": -100}  # None: the pad token


def has_cpp_compiler() -> bool:
    return bool(os.environ.get("CXX") and shutil.which(os.environ["CXX"])) or \
        any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def torch_compiles_transformers() -> bool:
    """transformers' models (4.56 on) call torch.compiler.is_exporting, added in torch 2.7; torch 2.6's dynamo
    stops on the missing attribute instead of tracing around it."""
    return hasattr(torch.compiler, "is_exporting")


def check_compile(mode: str, method, device: torch.device, backend: str = "inductor") -> None:
    """Refuse a compile setting this run cannot honour (nothing to check when mode is 'off')."""
    if mode == "off":
        return
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile '{mode}': choose one of {', '.join(COMPILE_MODES)}.")
    from edgeft.methods.base import Method

    if method.name == "pac":
        raise ConfigError("compile: PAC has its own fast path (method option graphs: true, the default on CUDA, "
                          "replays its cached step as CUDA graphs); leave compile off for PAC.")
    if type(method).train_step is not Method.train_step:
        raise ConfigError(f"compile: method '{method.name}' runs its own forward-only step; compile is for the "
                          "backprop methods (full, lora, prompt, bitfit). Leave compile off.")
    if not torch_compiles_transformers():
        raise ConfigError(f"compile needs torch 2.7 or newer: transformers' models call torch.compiler.is_exporting, "
                          f"which torch {torch.__version__} lacks, and dynamo stops there. Upgrade torch or leave "
                          "compile off.")
    if backend != "inductor":
        return
    if device.type == "cpu" and not has_cpp_compiler():
        raise ConfigError("compile on a CPU needs a C++ compiler for torch's inductor (none of g++, c++, clang++ "
                          "or $CXX found); install one (e.g. apt-get install g++) or leave compile off.")
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError("compile on CUDA needs Triton (pip install triton); leave compile off.")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"compile on device '{device}': supported on cpu and cuda; leave compile off.")


def bucket_width(width: int, cap: int, bucket: int = LENGTH_BUCKET) -> int:
    """`width` rounded up to a multiple of `bucket`, but never past `cap` (nor below `width`)."""
    return max(width, min(math.ceil(width / bucket) * bucket, cap))


def pad_to_bucket(batch: dict, pad_id: int, left: bool, cap: int, bucket: int = LENGTH_BUCKET) -> dict:
    """The batch with its token tensors padded (on the collate's side) to the bucket's width."""
    width = batch["input_ids"].shape[1]
    extra = bucket_width(width, cap, bucket) - width
    if extra == 0:
        return batch
    out = dict(batch)
    for key, value in PAD_VALUES.items():
        t = batch.get(key)
        if t is None:
            continue
        fill = torch.full((t.shape[0], extra), pad_id if value is None else value, dtype=t.dtype, device=t.device)
        out[key] = torch.cat([fill, t] if left else [t, fill], dim=1)
    return out


def pad_rows(batch: dict, rows: int, pad_id: int, left: bool) -> dict:
    """The batch with filler rows up to `rows`: pad tokens, one attended position (a fully masked row would give
    NaN attention), label -100 (ignored by the cross-entropy losses); token labels -100 throughout."""
    have = batch["input_ids"].shape[0]
    if have >= rows:
        return batch
    extra, width = rows - have, batch["input_ids"].shape[1]
    out = dict(batch)
    for key, value in PAD_VALUES.items():
        t = batch.get(key)
        if t is None:
            continue
        fill = torch.full((extra, width), pad_id if value is None else value, dtype=t.dtype, device=t.device)
        if key == "attention_mask":
            fill[:, -1 if left else 0] = 1
        out[key] = torch.cat([t, fill])
    if "label" in batch:
        label = batch["label"]
        out["label"] = torch.cat([label, torch.full((extra,), -100, dtype=label.dtype, device=label.device)])
    return out


def _dynamo_seconds() -> float | None:
    """Seconds torch spent compiling in this process so far (dynamo + AOTAutograd + inductor), where torch says."""
    try:
        from torch._dynamo.utils import calculate_time_spent

        spent = calculate_time_spent()
        return float(spent.get("entire_frame_compile", sum(spent.values())))
    except Exception:  # a private helper: absent or reshaped in some torch versions
        return None


def _dynamo_counts() -> dict:
    """Graphs compiled, graph breaks and CUDA-graph skips so far in this process (torch's own counters)."""
    try:
        from torch._dynamo.utils import counters

        return {"graphs": int(counters["stats"].get("unique_graphs", 0)),
                "graph_breaks": int(sum(counters["graph_break"].values())),
                "cudagraph_skips": int(counters["inductor"].get("cudagraph_skips", 0))}
    except Exception:
        return {}


class CompiledForward:
    """One Trainer's compiled model: pads batches, marks CUDA-graph steps, and keeps what compiling cost."""

    def __init__(self, model: torch.nn.Module, mode: str, device: torch.device, pad_id: int, left: bool,
                 max_length: int, rows: int | None, backend: str = "inductor", bucket: int = LENGTH_BUCKET):
        self.device, self.pad_id, self.left, self.cap, self.bucket = device, pad_id, left, max_length, bucket
        self.rows = rows  # filler rows up to this many (None: regression, the short batch is its own shape)
        self.requested = mode
        self.mode = "default" if (mode == "reduce-overhead" and device.type != "cuda") else mode
        self.backend = backend
        self.graphs = bool(self.mode == "reduce-overhead" and backend == "inductor")
        bound = (1 if rows else 2) * math.ceil(max_length / bucket) + 2
        import torch._dynamo.config as dynamo_config

        name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
        setattr(dynamo_config, name, max(getattr(dynamo_config, name), bound))
        kwargs = {"backend": backend, "dynamic": False}
        if backend == "inductor":
            kwargs["mode"] = self.mode
        self.module = torch.compile(model, **kwargs)
        self.shapes: dict[tuple, int] = {}
        self.first_seen_s = 0.0
        self._compile_s0 = _dynamo_seconds()

    def prepare(self, batch: dict) -> dict:
        """The (CPU) collated batch padded to its bucket (and, when short, to the batch size in rows)."""
        batch = pad_to_bucket(batch, self.pad_id, self.left, self.cap, self.bucket)
        return pad_rows(batch, self.rows, self.pad_id, self.left) if self.rows else batch

    def step_begin(self) -> None:
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()  # last step's graph outputs are no longer read

    def note(self, batch: dict, seconds: float) -> None:
        """After a step: the time of a step that met a new shape (compiling, recording graphs) is kept aside."""
        shape = tuple(batch["input_ids"].shape)
        seen = self.shapes.get(shape, 0)
        self.shapes[shape] = seen + 1
        if seen < (2 if self.graphs else 1):  # cudagraph trees warm up on a shape's first call, record on the 2nd
            self.first_seen_s += seconds

    def report(self) -> dict:
        now = _dynamo_seconds()
        return {"mode": self.mode, "requested": self.requested, "backend": self.backend, "cuda_graphs": self.graphs,
                "bucket": self.bucket, "filler_rows": bool(self.rows), "shapes": sorted([list(s) for s in self.shapes]),
                "first_seen_steps_s": self.first_seen_s,
                "compile_s": None if now is None or self._compile_s0 is None else now - self._compile_s0,
                **_dynamo_counts()}


def compiled_forward(model, method, cfg, device: torch.device, featurizer, backend: str = "inductor"):
    """The Trainer's CompiledForward, or None when cfg.compile is 'off' (after refusing what cannot run)."""
    check_compile(cfg.compile, method, device, backend)
    if cfg.compile == "off":
        return None
    pad_id = featurizer.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = 0  # padded positions are masked; their id only has to exist
    rows = None if featurizer.objective == "regress" else cfg.batch_size
    return CompiledForward(model, cfg.compile, device, pad_id, featurizer.padding_side == "left",
                           featurizer.max_length, rows, backend, cfg.compile_bucket)
