"""MeZO and forward gradients as Methods and as primitives (tiny random model, CPU)."""

import math

import pytest
import torch

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import ConfigError
from edgeft.federated.config import FederatedConfig
from edgeft.methods import get_method
from edgeft.methods.fwdgrad import forward_gradient, halves_variance, pick_direction, relative_spread
from edgeft.methods.mezo import CHUNK, apply_seed_update, perturb, projected_gradient
from edgeft.models import load_backbone
from edgeft.train.loop import Trainer, TrainConfig
from edgeft.train.recipe import make_loss_fn


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_seeded_direction_is_regenerated_exactly_and_spans_chunks():
    big = torch.zeros(CHUNK + 5)
    small = torch.zeros(3, 4)
    perturb([big, small], seed=7, scale=1.0)
    z_big, z_small = big.clone(), small.clone()
    assert z_big[CHUNK:].abs().sum() > 0 and abs(float(z_big.std()) - 1) < 0.01
    perturb([big, small], seed=7, scale=-1.0)
    assert torch.count_nonzero(big) == 0 and torch.count_nonzero(small) == 0
    a, b = [torch.ones(5)], [torch.ones(5)]
    apply_seed_update(a, 11, 0.5)
    apply_seed_update(b, 11, 0.5)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], torch.ones(5))


def test_projected_gradient_estimates_the_directional_derivative():
    w = torch.tensor([1.0, -2.0, 0.5])
    target = torch.tensor([0.0, 1.0, 2.0])

    def loss():
        return ((w - target) ** 2).sum()

    est, cos = torch.zeros(3), []
    for seed in range(400):
        g, plus, minus = projected_gradient([w], seed, 1e-3, loss)
        z = torch.zeros(3)
        perturb([z], seed, 1.0)
        est += g * z
    true = 2 * (w - target)
    assert torch.allclose(w, torch.tensor([1.0, -2.0, 0.5]), atol=1e-5)  # parameters are restored
    assert torch.nn.functional.cosine_similarity(est, true, dim=0) > 0.9


def _tiny(path, method, options, samples=16):
    task = load_task(TaskConfig(name="sst2", train_samples=samples, dev_samples=8, max_length=24))
    bb = load_backbone(str(path), head="causal_lm")
    feat = Featurizer(task, bb.tokenizer, objective_for(task, "causal_lm"), 24)
    m = get_method(method, options)
    # LoRA's A matrices come from the global RNG: seeded here, so the run does not depend on the tests before it
    # (MeZO's 6 steps here moved the loss by 3e-5 the wrong way after one order of the suite)
    torch.manual_seed(0)
    model = m.prepare(bb, task)
    return task, feat, m, model


@pytest.mark.parametrize("method,options", [
    ("mezo", {"base": "lora", "lr": 5e-2, "eps": 1e-2, "seed": 1}),
    ("fwdgrad", {"base": "lora", "lr": 5e-2, "perturbations": 4, "seed": 1}),
])
def test_optimizer_free_methods_train_in_place_through_the_trainer(tiny_llama, method, options):
    task, feat, m, model = _tiny(tiny_llama, method, options)
    assert m.uses_optimizer is False
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    batch = feat.collate(feat.encode(task.train))
    loss_fn = make_loss_fn(feat)
    with torch.no_grad():
        before = float(loss_fn(model, batch))
    trainer = Trainer(model, m, feat, feat.encode(task.train), TrainConfig(epochs=6, batch_size=16, device="cpu"),
                      loss_fn)
    assert trainer.optimizer is None
    trainer.fit()
    with torch.no_grad():
        after = float(loss_fn(model, batch))
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, trained[n]) for n, p in model.named_parameters() if n in trained)
    assert all(p.grad is None for p in model.parameters())  # no autograd anywhere
    assert math.isfinite(after) and after < before


def test_forward_gradient_pieces():
    w = torch.tensor([0.5, -1.0, 2.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    est = forward_gradient([w], lambda i: (w ** 2).sum(), 64, 0.01, gen, check_index=0)
    true = 2 * w
    assert est.count == 64 and len(est.check) == 64
    assert torch.nn.functional.cosine_similarity(est.grad[0] / est.count, true, dim=0) > 0.8
    # directions aligned with a reference beat plain Gaussian draws
    ref = torch.tensor([1.0, 0.0, 0.0, 0.0])
    aligned = [float(torch.nn.functional.cosine_similarity(pick_direction(ref.shape, ref, 10, gen), ref, dim=0))
               for _ in range(50)]
    plain = [float(torch.nn.functional.cosine_similarity(pick_direction(ref.shape, None, 10, gen), ref, dim=0))
             for _ in range(50)]
    assert sum(aligned) / 50 > sum(plain) / 50 + 0.3
    assert halves_variance([torch.ones(3)] * 4) == 0.0
    assert halves_variance([torch.zeros(3), torch.ones(3) * 2]) == pytest.approx(1.0)  # noise share of mean 1: 3 / 3


def test_the_halves_check_is_scale_free_and_falls_with_more_perturbations():
    """FwdLLM's halves check as the noise share of the pooled mean: the same on a loss 1000x larger, near 1 for a
    few forward gradients of a 64-value tensor (above the default threshold: the server asks for more) and small
    for many of a 4-value one (below it: the server steps)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    assert relative_spread(1000 * a, 1000 * b, 3, 5) == pytest.approx(relative_spread(a, b, 3, 5), rel=1e-6)
    threshold = FederatedConfig.model_fields["var_threshold"].default

    def spread(dim: int, num: int) -> float:
        w = torch.randn(dim, generator=torch.Generator().manual_seed(dim))
        est = forward_gradient([w], lambda i: (w ** 2).sum(), num, 0.01, torch.Generator().manual_seed(1),
                               check_index=0)
        return halves_variance(est.check)

    noisy, consistent = spread(64, 8), spread(4, 1024)
    assert noisy > threshold > consistent, (noisy, consistent)
    assert noisy > 0.7 and consistent < 0.1


def test_bad_zeroth_order_options_are_clean_errors():
    with pytest.raises(ConfigError, match="unknown base method 'lorax'"):
        get_method("mezo", {"base": "lorax"})
    with pytest.raises(ConfigError, match="itself optimizer-free"):
        get_method("fwdgrad", {"base": "mezo"})
    with pytest.raises(ConfigError, match="eps"):
        get_method("mezo", {"eps": -1})
