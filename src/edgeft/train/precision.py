"""Mixed precision, in one place: which precision a run trains in, autocast for its forwards, TF32 for fp32 matrix
products on CUDA, and loss scaling for fp16.

The weights (and so the optimizer's master copy) stay fp32 whatever the precision: `torch.autocast` runs the
forward's matrix products in bf16 or fp16 and keeps reductions, norms and losses in fp32. fp16's narrow range
needs the loss scaled up before the backward and the gradients scaled back before clipping and the step,
skipping a step whose gradients overflowed:

- one process (the Trainer, the federated clients): torch's `GradScaler`;
- several ranks that must skip the same steps (the runtime strategies): `AgreedScale`, the same rule (start at
  2**16, halve on overflow, double after 2000 clean steps) decided on the gradient norm the ranks all-reduce
  anyway, so every rank holds the same scale and skips together.

`tf32` (CUDA only) is fp32 with the fp32 matrix products on TF32 tensor cores (torch's float32 matmul precision
'high': 10-bit mantissa inputs, fp32 accumulation). It is set process-wide, here: building a Precision on CUDA
sets it on for `tf32` and off for every other precision, so one run's choice does not leak into the next run of
the same process. The one other place that touches it is PAC's fill with `fill_precision=tf32`
(`methods.pac.streaming.fill_numerics`, which may not import this layer): on for that pass only, then the run's
setting back. Runs named fp32 stay TF32-free (the benchmark tables that say "TF32 off").

`auto` is fp32 on every device for now, so CPU runs stay bit-identical to what they were. It was meant to be bf16
on a CUDA GPU; measured on an H200 (docs/benchmarks_pac.md, "Performance") bf16 autocast made the SmolLM2-sized
runs slower, not faster (they are launch-bound, and autocast adds casts around every product), and LoRA's bf16
loss turned NaN during training there (cuDNN's SDPA backward; guarded in `Precision.autocast`).
`AUTO_BF16_ON_CUDA` turns `auto` into bf16 on a CUDA GPU that supports it, once a GPU run shows bf16 faster.
`bf16`/`fp16` are there to ask for. Methods without a backward (MeZO, FwdLLM) take autocast for their forwards
through the wrapped loss function. PAC's activation cache keeps its own cache_dtype: it stores whatever the backbone
produced in that dtype.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Literal

import torch

from edgeft.errors import ConfigError

PrecisionName = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# `auto` on a CUDA GPU with bf16: bf16 when True, fp32 when False. False: on an H200 (2026-12-04,
# bench/results/pac/issue18_1206/) bf16 LoRA at the SmolLM2 size ran at 0.71x / 0.87x of fp32 even with the frozen
# backbone stored in bf16, because the step is host-bound (GPU busy 72 of 217 ms, 5,224 kernel launches a step) and
# autocast adds cast kernels; flip it when a GPU run shows bf16 faster (larger models, a compiled step).
AUTO_BF16_ON_CUDA = False

# What Precision.cast_frozen stores in the compute dtype (CUDA, bf16/fp16): "linear", the frozen Linear layers only
# (embeddings, tied LM heads and norms stay fp32, so the residual stream stays fp32 and every product's input is
# cast); "all", every frozen floating-point parameter (the residual stream in bf16, as in a model loaded in bf16:
# no casts in front of the frozen products, RoPE and the LM head in bf16; the norms still compute in fp32 inside).
FROZEN_CAST: Literal["linear", "all"] = "linear"


def cpu_supports_fp16() -> bool:
    """Whether this torch runs fp16 autocast and gradient unscaling on the CPU."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            out = torch.ones(2, 2) @ torch.ones(2, 2)
        torch.amp.GradScaler("cpu")
        return out.dtype == torch.float16
    except (RuntimeError, AttributeError, TypeError):
        return False


def _matmul_s(dtype: torch.dtype, n: int = 256, repeats: int = 5) -> float:
    """The fastest of a few n x n matrix products in `dtype` on one thread (the least disturbed by other work)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a @ b  # the first call pays for the kernel's set-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return min(times)


def cpu_precision_notes(name: str, device: torch.device | str) -> list[str]:
    """A warning when bf16/fp16 on this CPU multiply matrices slower than fp32: a CPU without native fp16
    arithmetic (most x86 ones) emulates it, and `--precision fp16` trained 30-100x slower, silently (measured on
    this project's AMD EPYC: one SmolLM2 LoRA step 146 s against ~2 s in fp32). A few milliseconds to measure."""
    if torch.device(device).type != "cpu" or name not in DTYPES:
        return []
    fp32, mine = _matmul_s(torch.float32), _matmul_s(DTYPES[name])
    if mine <= 1.5 * fp32:
        return []
    other = "bf16" if name == "fp16" else "fp16"
    alt = _matmul_s(DTYPES[other])
    better = f"{other} ({fp32 / alt:.1f}x fp32's speed here) or fp32" if alt < fp32 else "fp32"
    return [f"--precision {name}: this CPU multiplies {name} matrices {mine / fp32:.0f}x slower than fp32 (it has "
            f"no native {name} arithmetic), so training will be slower, not faster; use {better}."]


def resolve_precision(name: str, device: torch.device | str) -> str:
    """fp32, tf32, bf16 or fp16 for a run of precision `name` on `device` (auto: see the module's note)."""
    device = torch.device(device)
    if name not in PRECISIONS:
        raise ConfigError(f"precision '{name}': choose one of {', '.join(PRECISIONS)}.")
    if name == "auto":
        return "bf16" if AUTO_BF16_ON_CUDA and device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "tf32" and device.type != "cuda":
        raise ConfigError(f"precision 'tf32' on device '{device}': TF32 is an NVIDIA GPU format; use fp32 or bf16.")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision 'bf16': {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32.")
    if name == "fp16" and device.type == "cpu" and not cpu_supports_fp16():
        raise ConfigError("precision 'fp16': this torch has no fp16 autocast on the CPU; use bf16 or fp32.")
    if name != "fp32" and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"precision '{name}' on device '{device}': mixed precision runs on cpu or cuda; use fp32.")
    return name


def set_tf32(on: bool) -> None:
    """CUDA's fp32 matrix products on TF32 tensor cores or not, process-wide: where edgeft sets it for a run (cuDNN's
    convolutions keep torch's own default)."""
    torch.backends.cuda.matmul.allow_tf32 = on


@contextmanager
def _cuda_autocast(dtype: torch.dtype):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]), \
            torch.autocast("cuda", dtype=dtype):
        yield


class AgreedScale:
    """fp16 loss scaling for ranks that must agree: a plain float, updated on a decision every rank shares."""

    def __init__(self, init: float = 2.0**16, growth: float = 2.0, backoff: float = 0.5, interval: int = 2000):
        self.scale, self.growth, self.backoff, self.interval = init, growth, backoff, interval
        self.clean = 0

    def update(self, finite: bool) -> bool:
        """After an all-reduced gradient norm: whether to step (False: skip, and scale down)."""
        if not finite:
            self.scale *= self.backoff
            self.clean = 0
            return False
        self.clean += 1
        if self.clean % self.interval == 0:
            self.scale *= self.growth
        return True


class Precision:
    """One run's precision on one device. `agreed=True`: fp16 scales with AgreedScale (several ranks)."""

    def __init__(self, name: str = "auto", device: torch.device | str = "cpu", agreed: bool = False):
        self.device = torch.device(device)
        self.name = resolve_precision(name, self.device)
        self.dtype = DTYPES.get(self.name)  # None: fp32 or tf32, no autocast
        if self.device.type == "cuda":
            set_tf32(self.name == "tf32")
        self.scaler = self.agreed = None
        if self.name == "fp16":
            if agreed:
                self.agreed = AgreedScale()
            else:
                self.scaler = torch.amp.GradScaler(self.device.type)

    def __repr__(self) -> str:
        return f"Precision({self.name}, {self.device})"

    @property
    def scales_loss(self) -> bool:
        return self.scaler is not None or self.agreed is not None

    def autocast(self):
        """The context a forward runs in (nothing under fp32). On CUDA it also keeps attention off cuDNN's SDPA
        kernel, whose backward returns NaN query gradients with an attention mask when the sequence length is
        64 mod 128 (pytorch/pytorch#196678, torch 2.11 on H100/H200): the first NaN of bf16 LoRA on an H200 was
        in the gradients of step 3, a batch padded to 64 tokens, with its forward finite under every backend
        (bench/bf16_nan_probe.py). Not yet re-run on a GPU with this guard."""
        if self.dtype is None:
            return nullcontext()
        if self.device.type != "cuda":
            return torch.autocast(self.device.type, dtype=self.dtype)
        return _cuda_autocast(self.dtype)

    def cast_frozen(self, model: torch.nn.Module, scope: str | None = None) -> int:
        """On CUDA under bf16/fp16: store frozen weights in the compute dtype, once (`scope`: FROZEN_CAST's
        default; "linear" or "all", see there).

        Autocast caches its casts only for weights that require gradients, so a frozen fp32 weight is cast
        again on every forward (measured on an H200: a frozen SmolLM2 forward over 4,000 sentences 5.22 s under
        bf16 autocast, 2.60 s with the weights stored in bf16). Under "linear", embeddings (and LM heads tied to
        them) and norms stay fp32, so the residual stream keeps autocast's fp32 accumulation, at the price of a
        cast in front of every frozen product and behind it in the backward (and RoPE in fp32, q and k cast back
        for attention, the tied LM head's 28 M weights re-cast every forward in SmolLM2). Under "all" every frozen
        floating-point parameter is cast (buffers such as RoPE's frequencies stay as they are). Trained weights keep
        their fp32 master copy.

        Also stops PEFT's LoRA layers casting their input up to their fp32 weights' dtype: under autocast that cast
        is undone at once by autocast's own (two casts and an fp32 dropout per adapter, forward and backward).

        Returns how many tensors were cast; nothing on CPU or under fp32 (CPU runs stay bit-identical)."""
        if self.dtype is None or self.device.type != "cuda":
            return 0
        scope = scope or FROZEN_CAST
        if scope not in ("linear", "all"):
            raise ConfigError(f"frozen cast scope '{scope}': choose linear or all.")
        for module in model.modules():  # PEFT's LoRA layers (peft.tuners.tuners_utils._cast_input_dtype)
            if hasattr(module, "lora_A") and hasattr(module, "_cast_input_dtype"):
                module.cast_input_dtype_enabled = False
        if scope == "all":
            tensors = {id(p): p for p in model.parameters() if not p.requires_grad}.values()
        else:
            shared = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}  # tied LM heads
            tensors = [t for m in model.modules() if isinstance(m, torch.nn.Linear) for t in (m.weight, m.bias)
                       if t is not None and not t.requires_grad and id(t) not in shared]
        cast = 0
        for tensor in tensors:
            if tensor.is_floating_point() and tensor.dtype != self.dtype:
                tensor.data = tensor.data.to(self.dtype)
                cast += 1
        hook = getattr(model, "after_frozen_cast", None)  # PAC: its host-kept backbone re-pins the new copies
        if cast and callable(hook):
            hook()
        return cast

    def wrap(self, loss_fn: Callable) -> Callable:
        """`loss_fn(model, batch)` with its forward under autocast (loss_fn itself under fp32)."""
        if self.dtype is None:
            return loss_fn

        def autocast_loss(model, batch):
            with self.autocast():
                return loss_fn(model, batch)

        return autocast_loss

    # -- loss scaling ---------------------------------------------------------------------------------------
    def scale(self, factor: float):
        """What a loss is multiplied by before its backward: `factor`, times the loss scale under fp16."""
        if self.scaler is not None:
            return self.scaler.scale(torch.tensor(float(factor), device=self.device))
        if self.agreed is not None:
            return factor * self.agreed.scale
        return factor

    def step(self, optimizer, params: list, max_grad_norm: float | None) -> bool:
        """Clip (after unscaling) and step one process's optimizer; False when fp16 gradients overflowed and the
        step was skipped."""
        if self.scaler is None:
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            return True
        scaler = self.scaler
        before = scaler.get_scale()
        scaler.unscale_(optimizer)
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        return scaler.get_scale() >= before

    def unscale_agreed(self, grads: list[torch.Tensor]) -> None:
        """Ranks' gradients back to the loss's own scale (before their norm is all-reduced)."""
        if self.agreed is not None:
            inv = 1.0 / self.agreed.scale
            for g in grads:
                g.mul_(inv)

    def agree(self, total_norm: float) -> bool:
        """Whether the ranks step, from their all-reduced gradient norm (always True unless fp16 overflowed)."""
        if self.agreed is None:
            return True
        return self.agreed.update(math.isfinite(total_norm))

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict | None:
        if self.scaler is not None:
            return {"scale": float(self.scaler.get_scale())} if self.scaler.is_enabled() else None
        if self.agreed is not None:
            return {"scale": self.agreed.scale, "clean": self.agreed.clean}
        return None

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        if self.scaler is not None:  # a fresh scaler starting at the saved scale (it has not scaled anything yet)
            self.scaler = torch.amp.GradScaler(self.device.type, init_scale=float(state["scale"]))
        elif self.agreed is not None:
            self.agreed.scale, self.agreed.clean = float(state["scale"]), int(state.get("clean", 0))
