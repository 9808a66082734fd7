"""MeZO: zeroth-order SGD in place (Malladi et al., 2023), as a Method over any other method's trainables.

One step draws a seed, perturbs the trainable parameters by +eps*z, -2eps*z, +eps*z (z ~ N(0, I)
regenerated from the seed each time, never stored), evaluates the loss at the two perturbed points and
updates in place: theta -= lr * (g * z + wd * theta) with g = (L+ - L-) / (2 eps). No backward pass, no
optimizer state, no gradient buffers: memory stays at the level of inference.

The primitives (`perturb`, `projected_gradient`, `apply_seed_update`) are shared with FedKSeed, whose
clients and server rebuild models by replaying (seed, scalar) pairs with `apply_seed_update`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from pydantic import Field, field_validator
from torch import nn

from edgeft.errors import ConfigError
from edgeft.methods.base import METHODS, Method, MethodOptions, get_method, register_method

# z is drawn in slices of this many elements so that the largest extra buffer is 16 MB in float32
# whatever the parameter size (the SmolLM2 embedding alone is 28M elements). The slicing is part of the
# definition of z(seed): change it and old (seed, scalar) histories no longer replay to the same model.
CHUNK = 1 << 22


def _no_decay(name: str) -> bool:
    """MeZO's rule: biases and norms take no weight decay."""
    lowered = name.lower()
    return name.endswith("bias") or "norm" in lowered


def _each_chunk(params: Iterable[torch.Tensor], seed: int):
    """Yield (flat slice of a parameter, matching slice of z) in a fixed order, z regenerated from `seed`."""
    gen = None
    for p in params:
        if gen is None or gen.device != p.device:
            gen = torch.Generator(device=p.device).manual_seed(int(seed))
        flat = p.data.view(-1)
        for start in range(0, flat.numel(), CHUNK):
            piece = flat[start:start + CHUNK]
            z = torch.randn(piece.numel(), generator=gen, device=p.device, dtype=torch.float32)
            yield piece, (z if piece.dtype == torch.float32 else z.to(piece.dtype))


def perturb(params: list[torch.Tensor], seed: int, scale: float) -> None:
    """theta += scale * z(seed), in place."""
    with torch.no_grad():
        for piece, z in _each_chunk(params, seed):
            piece.add_(z, alpha=scale)


def apply_seed_update(params: list[torch.Tensor], seed: int, coef: float, weight_decay: float = 0.0,
                      decay_mask: Optional[list[bool]] = None, lr: float = 0.0) -> None:
    """theta -= coef * z(seed) (coef = lr * g), with MeZO's optional decoupled weight decay lr * wd * theta.

    FedKSeed replays histories with weight_decay = 0 only: then the result depends on the pairs alone.
    """
    with torch.no_grad():
        if weight_decay:
            for p, decay in zip(params, decay_mask or [True] * len(params)):
                if decay:
                    p.data.mul_(1.0 - lr * weight_decay)
        for piece, z in _each_chunk(params, seed):
            piece.add_(z, alpha=-coef)


def projected_gradient(params: list[torch.Tensor], seed: int, eps: float,
                       loss_at: Callable[[], torch.Tensor]) -> tuple[float, float, float]:
    """MeZO's two-point estimate along z(seed): returns (g, L+, L-); params end where they started."""
    with torch.no_grad():
        perturb(params, seed, eps)
        loss_plus = float(loss_at())
        perturb(params, seed, -2.0 * eps)
        loss_minus = float(loss_at())
        perturb(params, seed, eps)
    return (loss_plus - loss_minus) / (2.0 * eps), loss_plus, loss_minus


def named_trainables(method: Method, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The method's trainable parameters with their names, in model order, tied weights once."""
    wanted = {id(p) for p in method.trainable_parameters(model)}
    seen, out = set(), []
    for name, p in model.named_parameters():
        if id(p) in wanted and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def split_prefixed(state: dict, prefix: str) -> tuple[dict, dict]:
    """(the entries whose names start with `prefix`, the others): a method's own checkpoint state and its base's."""
    return ({k: v for k, v in state.items() if k.startswith(prefix)},
            {k: v for k, v in state.items() if not k.startswith(prefix)})


class ZerothOrderOptions(MethodOptions):
    """Shared by the optimizer-free methods: which parameters train (another method's set) and how."""

    base: str = Field("full", description="method whose trainable parameters are tuned (full, lora, bitfit, ...)")
    base_options: dict = Field(default_factory=dict, description="the base method's own options, e.g. {r: 4}")
    lr: float = Field(1e-6, gt=0)
    seed: int = 0

    @field_validator("base")
    @classmethod
    def _known_base(cls, value: str) -> str:
        if value in ("mezo", "fwdgrad"):
            raise ValueError(f"base '{value}' is itself optimizer-free; choose a parameter set (full, lora, bitfit)")
        return value


class MezoOptions(ZerothOrderOptions):
    eps: float = Field(1e-3, gt=0, description="perturbation scale")
    weight_decay: float = Field(0.0, ge=0)
    max_loss_diff: Optional[float] = Field(None, gt=0, description="skip a step when |L+ - L-| exceeds this "
                                                                   "(FedKSeed's grad_clip)")


class ZerothOrderMethod(Method):
    """A Method that updates another method's parameter set without autograd or an optimizer."""

    uses_optimizer = False

    def __init__(self, options=None):
        super().__init__(options)
        if self.options.base not in METHODS:
            choices = ", ".join(sorted(n for n in METHODS if n not in ("mezo", "fwdgrad")))
            raise ConfigError(f"{self.name}: unknown base method '{self.options.base}'. Choose one of: {choices}.")
        try:
            self.base = get_method(self.options.base, self.options.base_options)
        except ConfigError as err:  # it named the base method as if given by --method: say where the options were
            problem = str(err).removeprefix(f"method '{self.options.base}' options: ")
            raise ConfigError(f"{self.name} option base_options (the options of its base method "
                              f"'{self.options.base}'): {problem}") from None
        self._rng = random.Random(self.options.seed)

    def prepare(self, backbone, task) -> nn.Module:
        return self.base.prepare(backbone, task)

    def lr_for(self, model: nn.Module | None = None) -> float:
        """The lr its steps take (its own option): the run's records showed Method.default_lr, 1e-4, beside MeZO's
        1e-6 steps."""
        return self.options.lr

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return self.base.trainable_parameters(model)

    # the base method's own preparation of the model it trains (PAC over a zeroth-order method: its cache fill and
    # channel statistics before the first epoch, its placement), which it would get if trained by its own steps
    def place(self, model: nn.Module, device) -> nn.Module:
        return self.base.place(model, device)

    def on_epoch_start(self, model: nn.Module, epoch: int, feats: list[dict], collate: Callable,
                       resumed: bool = False) -> None:
        self.base.on_epoch_start(model, epoch, feats, collate, resumed=resumed)

    def next_seed(self) -> int:
        return self._rng.randrange(2**31 - 1)

    def checkpoint_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The seed stream's position (and the base method's state): a resumed run draws the seeds the
        uninterrupted one would have, not the stream again from its start."""
        version, words, gauss = self._rng.getstate()
        return {**self.base.checkpoint_state(model), "zo.seed_stream": torch.tensor(words, dtype=torch.int64),
                "zo.seed_stream_meta": torch.tensor([version, float("nan") if gauss is None else gauss],
                                                    dtype=torch.float64)}

    def load_checkpoint_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        own, rest = split_prefixed(state, "zo.")
        self.base.load_checkpoint_state(model, rest)
        if "zo.seed_stream" in own:
            version, gauss = own["zo.seed_stream_meta"].tolist()
            self._rng.setstate((int(version), tuple(own["zo.seed_stream"].tolist()),
                                None if gauss != gauss else gauss))

    def save(self, model: nn.Module, out_dir: Path) -> None:
        self.base.save(model, out_dir)

    def load(self, backbone, task, adapter_dir: Path) -> nn.Module:
        return self.base.load(backbone, task, adapter_dir)


@register_method
class MeZO(ZerothOrderMethod):
    """Zeroth-order SGD in place: two forward passes per step, no backward, inference-sized memory.

    `edgeft finetune --method mezo --option base=lora --option lr=1e-4 --option eps=1e-2`.
    """

    name = "mezo"
    Options = MezoOptions

    def train_step(self, model, batch, loss_fn, scale: float = 1.0) -> float:
        named = named_trainables(self, model)
        params = [p for _, p in named]
        seed = self.next_seed()
        was_training = model.training
        model.eval()  # MeZO evaluates both points with dropout off
        try:
            g, loss_plus, loss_minus = projected_gradient(params, seed, self.options.eps, lambda: loss_fn(model, batch))
            if self.options.max_loss_diff is None or abs(loss_plus - loss_minus) <= self.options.max_loss_diff:
                apply_seed_update(params, seed, self.options.lr * g, self.options.weight_decay,
                                  [not _no_decay(n) for n, _ in named], self.options.lr)
        finally:
            model.train(was_training)
        return loss_plus
