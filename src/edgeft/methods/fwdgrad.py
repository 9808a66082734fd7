"""Forward gradients (FwdLLM, Xu et al., USENIX ATC'24), as a Method over any other method's trainables.

A forward gradient is v * dL/dv for a random direction v. FwdLLM computes the directional derivative
numerically, (L(theta + h v) - L(theta - h v)) / 2h with h = 0.01, so no backward pass and no
activation storage are needed; it draws about ten times more candidate directions than it uses and keeps
those most cosine-similar, tensor by tensor, to the previous (global) update. The estimate is the sum of
jvp * v over the perturbations; its spread is measured on one tensor by comparing the mean of the first
half of the per-perturbation estimates with the mean of the second half (`halves_variance`), as a share of
the pooled estimate (`relative_spread`) so that one threshold means the same on any model.

The primitives here serve both `edgeft finetune --method fwdgrad` and the federated FwdLLM clients.
Both run `batched_forward_gradient`: all directions of a request are drawn at once (candidates and the
cosine choice as stacked tensors, one loop over parameter tensors, none over directions) and their
directional derivatives come from one `torch.func.jvp` vmapped over the directions (in chunks of
`chunk` directions, to bound the memory of the tangent logits), on one batch. The jvp is exact: it is
the limit h -> 0 of FwdLLM's central difference, which `forward_gradient` keeps as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from pydantic import Field, model_validator
from torch import nn

from edgeft.config import drop_retired_key
from edgeft.methods.base import register_method
from edgeft.methods.mezo import ZerothOrderMethod, ZerothOrderOptions, named_trainables, split_prefixed


@dataclass
class ForwardGradient:
    """Sum of jvp * v over `count` perturbations, their mean losses, and the check tensor's per-perturbation terms."""

    grad: list[torch.Tensor]
    count: int = 0
    losses: list[float] = field(default_factory=list)
    check: list[torch.Tensor] = field(default_factory=list)


def pick_direction(shape: torch.Size, reference: Optional[torch.Tensor], candidates: int,
                   gen: torch.Generator) -> torch.Tensor:
    """A Gaussian direction; with a reference, the most cosine-similar of `candidates` draws."""
    best = torch.randn(shape, generator=gen)
    if reference is None or candidates <= 1 or not torch.any(reference):
        return best
    ref = reference.reshape(-1).float()
    best_cos = torch.nn.functional.cosine_similarity(best.reshape(-1), ref, dim=0)
    for _ in range(candidates - 1):
        cand = torch.randn(shape, generator=gen)
        cos = torch.nn.functional.cosine_similarity(cand.reshape(-1), ref, dim=0)
        if cos > best_cos:
            best, best_cos = cand, cos
    return best


def directional_derivative(params: list[torch.Tensor], direction: list[torch.Tensor], h: float,
                           loss_at: Callable[[], torch.Tensor]) -> tuple[float, float]:
    """Central difference of the loss along `direction`: (jvp, mean of the two losses); params are restored."""
    with torch.no_grad():
        for p, v in zip(params, direction):
            p.add_(v.to(p.dtype), alpha=h)
        plus = float(loss_at())
        for p, v in zip(params, direction):
            p.add_(v.to(p.dtype), alpha=-2.0 * h)
        minus = float(loss_at())
        for p, v in zip(params, direction):
            p.add_(v.to(p.dtype), alpha=h)
    return (plus - minus) / (2.0 * h), (plus + minus) / 2.0


def forward_gradient(params: list[torch.Tensor], loss_for: Callable[[int], torch.Tensor], num: int, h: float,
                     gen: torch.Generator, reference: Optional[list[torch.Tensor]] = None, candidates: int = 1,
                     check_index: Optional[int] = None, into: Optional[ForwardGradient] = None) -> ForwardGradient:
    """Accumulate `num` forward gradients; perturbation i evaluates `loss_for(i)` (e.g. one batch each)."""
    out = into or ForwardGradient(grad=[torch.zeros_like(p, dtype=torch.float32) for p in params])
    for i in range(num):
        direction = [pick_direction(p.shape, reference[j] if reference else None, candidates, gen)
                     for j, p in enumerate(params)]
        jvp, loss = directional_derivative(params, direction, h, lambda: loss_for(i))
        for g, v in zip(out.grad, direction):
            g.add_(v, alpha=jvp)
        if check_index is not None:
            out.check.append(direction[check_index] * jvp)
        out.count += 1
        out.losses.append(loss)
    return out


def draw_directions(params: list[torch.Tensor], num: int, reference: Optional[list[torch.Tensor]], candidates: int,
                    gen: torch.Generator) -> list[torch.Tensor]:
    """`num` directions per tensor, stacked ([num, *shape]); with a reference, each is the most
    cosine-similar to that tensor's reference of `candidates` Gaussian draws (FwdLLM's choice)."""
    out = []
    for j, p in enumerate(params):
        ref = reference[j] if reference else None
        shape = (num,) + tuple(p.shape)
        if ref is None or candidates <= 1 or not torch.any(ref):
            out.append(torch.randn(shape, generator=gen))
            continue
        cands = torch.randn((num, candidates, p.numel()), generator=gen)
        r = ref.reshape(-1).float().cpu()
        cos = (cands @ r) / (cands.norm(dim=-1) * r.norm()).clamp_min(1e-30)
        out.append(cands[torch.arange(num), cos.argmax(dim=1)].reshape(shape))
    return out


class _LossOf(nn.Module):
    """loss_fn(model, batch) as a module, so torch.func.functional_call can swap the tuned tensors."""

    def __init__(self, model: nn.Module, loss_fn: Callable):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def batched_jvp(model: nn.Module, named: list[tuple[str, torch.Tensor]], loss_fn: Callable, batch: dict,
                directions: list[torch.Tensor], chunk: int = 4) -> tuple[torch.Tensor, float]:
    """(dL/dv_i for every stacked direction i, the loss at theta): torch.func.jvp vmapped over directions."""
    from torch.func import functional_call, jvp, vmap
    from torch.nn.attention import SDPBackend, sdpa_kernel

    wrapped = _LossOf(model, loss_fn)
    keys = ["model." + n for n, _ in named]
    primals = tuple(p.detach() for _, p in named)

    def loss_at(*tensors):
        return functional_call(wrapped, dict(zip(keys, tensors)), (batch,), strict=False)

    def both(*tangents):
        return jvp(loss_at, primals, tangents)

    num = directions[0].shape[0]
    out, loss = [], float("nan")
    # forward-mode AD has no rule for the fused CPU attention kernels; the math kernel is the same function
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        for start in range(0, num, chunk):
            part = [d[start:start + chunk].to(p.dtype) for d, (_, p) in zip(directions, named)]
            value, tangent = vmap(both)(*part)
            out.append(tangent.float())
            loss = float(value[0])
    return torch.cat(out), loss


def batched_forward_gradient(model: nn.Module, named: list[tuple[str, torch.Tensor]], loss_fn: Callable,
                             batch: dict, num: int, gen: torch.Generator,
                             reference: Optional[list[torch.Tensor]] = None, candidates: int = 1,
                             check_index: Optional[int] = None, chunk: int = 4) -> ForwardGradient:
    """`num` forward gradients on one batch: sum_i jvp_i * v_i, with FwdLLM's per-direction check terms."""
    params = [p for _, p in named]
    directions = draw_directions(params, num, reference, candidates, gen)  # on the CPU generator: same draws anywhere
    directions = [d.to(p.device) for d, p in zip(directions, params)]
    jvps, loss = batched_jvp(model, named, loss_fn, batch, directions, chunk)
    grad = [torch.tensordot(jvps, d, dims=1) for d in directions]
    out = ForwardGradient(grad=grad, count=num, losses=[loss] * num)
    if check_index is not None:
        out.check = list(directions[check_index] * jvps.view((num,) + (1,) * (directions[check_index].dim() - 1)))
    return out


def relative_spread(first: torch.Tensor, second: torch.Tensor, n_first: int, n_second: int) -> float:
    """The noise share of the pooled mean of two half-means, read off their disagreement (scale-free).

    Each half-mean is the gradient plus independent noise of variance ~1/n, so the pooled mean carries noise
    of energy n1 n2 / (n1 + n2)^2 * |first - second|^2. Divided by the pooled mean's energy this is about 0
    when the halves agree and about 1 when they are uncorrelated (pure noise), on any model and loss scale;
    FwdLLM's own check (mean of (first - second)^2 / 2) grows with the gradient's scale instead.
    """
    if n_first == 0 or n_second == 0:
        return float("inf")
    first, second, n = first.double(), second.double(), n_first + n_second
    noise = n_first * n_second / n ** 2 * float(((first - second) ** 2).sum())
    energy = float((((n_first * first + n_second * second) / n) ** 2).sum())
    if energy == 0.0:
        return 0.0 if noise == 0.0 else float("inf")
    return noise / energy


def halves_variance(terms: list[torch.Tensor]) -> float:
    """FwdLLM's split of the per-perturbation terms into a first and a second half, measured scale-free."""
    half = len(terms) // 2
    if half == 0:
        return float("inf")
    first, second = torch.stack(terms[:half]).mean(0), torch.stack(terms[half:]).mean(0)
    return relative_spread(first, second, half, len(terms) - half)


# FwdLLM's finite-difference step, once an option here: the directional derivatives are exact jvps (its limit h -> 0),
# so no h acted; configs and adapter notes written then hold this default, which is still read (and dropped).
OLD_H = 0.01


class FwdGradOptions(ZerothOrderOptions):
    base: str = Field("lora", description="method whose trainable parameters are tuned (lora, full, bitfit, ...)")
    lr: float = Field(1e-3, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _no_step(cls, data):
        """`h` was accepted and did nothing (h=0.5 and h=1e-6 trained the same weights): the step is exact here."""
        return drop_retired_key(data, "h", OLD_H, "fwdgrad takes exact directional derivatives (torch.func.jvp, the "
                                "limit h -> 0 of FwdLLM's central difference), so there is no step to set")

    perturbations: int = Field(4, ge=1, description="directions per step")
    candidates: int = Field(10, ge=1, description="draws per direction; the most aligned with the previous update wins")
    chunk: int = Field(4, ge=1, description="directions per vmapped jvp (bounds the memory of the tangents)")


@register_method
class ForwardGradientMethod(ZerothOrderMethod):
    """Forward gradients along random directions (FwdLLM's, as exact jvps: no finite-difference step); no backward pass.

    `edgeft finetune --method fwdgrad --option base=lora --option perturbations=8`.
    """

    name = "fwdgrad"
    Options = FwdGradOptions

    def __init__(self, options=None):
        super().__init__(options)
        self._gen = torch.Generator().manual_seed(self.options.seed)
        self._previous: Optional[list[torch.Tensor]] = None

    def checkpoint_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The direction generator's state and the previous update the next directions are picked against."""
        state = {**super().checkpoint_state(model), "fwdgrad.generator": self._gen.get_state()}
        for i, g in enumerate(self._previous or []):
            state[f"fwdgrad.previous.{i}"] = g
        return state

    def load_checkpoint_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        own, rest = split_prefixed(state, "fwdgrad.")
        super().load_checkpoint_state(model, rest)
        if "fwdgrad.generator" in own:
            self._gen.set_state(own.pop("fwdgrad.generator"))
        if own:
            params = [p for _, p in named_trainables(self, model)]
            self._previous = [own[f"fwdgrad.previous.{i}"].to(p.device, p.dtype) for i, p in enumerate(params)]

    def train_step(self, model, batch, loss_fn, scale: float = 1.0) -> float:
        named = named_trainables(self, model)
        was_training = model.training
        model.eval()
        try:
            est = batched_forward_gradient(model, named, loss_fn, batch, self.options.perturbations, self._gen,
                                           self._previous, self.options.candidates, chunk=self.options.chunk)
            mean = [g / est.count for g in est.grad]
            with torch.no_grad():
                for (_, p), g in zip(named, mean):
                    p.add_(g.to(p.dtype), alpha=-self.options.lr)
        finally:
            model.train(was_training)
        self._previous = mean
        return sum(est.losses) / len(est.losses)
