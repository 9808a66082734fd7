"""FedKSeed's replay and in-process rounds, and batched forward gradients, on a tiny random model (CPU)."""

import numpy as np
import pytest
import torch

from edgeft.federated import fedit, fedkseed
from edgeft.federated.config import FederatedConfig
from edgeft.federated.data import seeded_rng
from edgeft.federated.local_grid import run_in_process
from edgeft.federated.session import setup_for
from edgeft.methods.fwdgrad import batched_forward_gradient, batched_jvp, directional_derivative, draw_directions
from test_zeroth_order import one_thread  # noqa: F401  (autouse: one torch thread per test)


def _cfg(tmp_path, model, **kw):
    base = dict(algorithm="fedkseed", model=str(model), task="dolly", train_samples=240, eval_samples=4, clients=4,
                clients_per_round=3, rounds=3, local_steps=8, batch_size=2, max_length=40, max_new_tokens=4,
                val_samples=16, num_seeds=64, lr=5e-3, eps=1e-2, threads=1, out=str(tmp_path / "run"))
    base.update(kw)
    return FederatedConfig(**base)


def _state(setup):
    return [p.detach().clone() for p in setup.params]


def test_replaying_a_clients_pairs_rebuilds_its_model_and_two_replays_agree_bit_for_bit(tmp_path, tiny_llama):
    cfg = _cfg(tmp_path, tiny_llama)
    setup = setup_for(cfg, "client")
    seeds = fedkseed.candidate_seeds(cfg.seed, cfg.num_seeds)
    setup.reset_to_w0()
    batches = setup.batches(0, 1, 12, 2)
    local, losses, skipped = fedkseed.local_steps(setup, seeds, batches, seeded_rng(0, 1, 0, 5), cfg.lr, cfg.eps)
    assert skipped == 0 and len(losses) == 12 and local
    trained = _state(setup)
    pool = np.zeros(cfg.num_seeds)
    fedkseed.add_to_pool(pool, [(1.0, np.array(sorted(local), dtype=np.uint16),
                                 np.array([local[j] for j in sorted(local)], dtype=np.float32))])
    fedkseed.replay_pool(setup, seeds, pool, cfg.lr)
    first, digest = _state(setup), setup.digest()
    for a, b in zip(first, trained):  # one client's pairs, replayed: its own model up to float32 rounding
        assert torch.allclose(a, b, atol=1e-6)
    assert any(not torch.equal(a, w) for a, w in zip(first, setup.w0))
    setup.reset_to_w0()
    fedkseed.replay_pool(setup, seeds, pool, cfg.lr)
    assert setup.digest() == digest  # the server and every client rebuild the same bits


def test_scalar_clipping_skips_the_steps_and_uploads_nothing_for_them(tmp_path, tiny_llama):
    cfg = _cfg(tmp_path, tiny_llama)
    setup = setup_for(cfg, "client")
    seeds = fedkseed.candidate_seeds(cfg.seed, cfg.num_seeds)
    setup.reset_to_w0()
    local, losses, skipped = fedkseed.local_steps(setup, seeds, setup.batches(0, 1, 6, 2), seeded_rng(0, 1, 0, 5),
                                                  cfg.lr, cfg.eps, max_loss_diff=1e-12)
    assert skipped == 6 and not local and not losses
    # +eps, -2 eps, +eps restores the weights up to float32 rounding (MeZO stores nothing to restore from)
    assert all(torch.allclose(p, w, atol=1e-6) for p, w in zip(setup.params, setup.w0))


def test_a_few_in_process_rounds_lower_the_server_held_training_loss(tmp_path, tiny_llama):
    cfg = _cfg(tmp_path, tiny_llama, rounds=4, local_steps=20, lr=2e-3)
    setup = setup_for(cfg, "server")
    setup.reset_to_w0()
    before = setup.val_loss(8)
    losses = []
    pool = fedkseed.simulate(setup, cfg, lambda rnd, skipped: losses.append(setup.val_loss(8)))
    assert len(losses) == cfg.rounds and np.count_nonzero(pool) > 0
    assert losses[-1] < before - 1e-3, (before, losses)


def test_fedit_in_process_rounds_average_the_clients_by_samples_and_lower_the_loss(tmp_path, tiny_llama):
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fedit", rounds=1, local_steps=6, lr=5e-3, val_samples=0,
               partition="dirichlet", alpha=0.5)  # shards of different sizes: the weights matter
    cfg = cfg.model_copy(update={"val_samples": 16})  # server-held rows for the loss, as bench/fed_kseed_sweep.py
    setup = setup_for(cfg, "server")
    start = _state(setup)
    chosen = sorted(int(p) for p in seeded_rng(cfg.seed, 1, 11).choice(cfg.clients, size=cfg.clients_per_round,
                                                                       replace=False))
    by_hand, weights = [], []
    for pid in chosen:  # each client from the same global adapters, as the Flower clients start
        with torch.no_grad():
            for p, w in zip(setup.params, start):
                p.copy_(w)
        weights.append(fedit.local_train(setup, cfg, pid, 1)["num-examples"])
        by_hand.append(_state(setup))
    with torch.no_grad():
        for p, w in zip(setup.params, start):
            p.copy_(w)
    before = setup.val_loss(8)
    fedit.simulate(setup, cfg)
    for p, *clients in zip(setup.params, *by_hand):
        mean = sum(n * c.double() for n, c in zip(weights, clients)) / sum(weights)
        assert torch.allclose(p.double(), mean, atol=1e-6)
    assert any(not torch.equal(p, w) for p, w in zip(setup.params, start))
    assert setup.val_loss(8) < before


def test_batched_forward_gradients_equal_the_per_direction_central_differences(tmp_path, tiny_llama):
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fwdgrad", val_samples=0, zo_base="full", zo_params=["norm"])
    setup = setup_for(cfg, "client")
    setup.reset_to_w0()
    named = list(zip(setup.names, setup.params))
    batch = setup.batches(0, 1, 1, 2)[0]
    reference = [torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) for p in setup.params]
    directions = draw_directions(setup.params, 6, reference, 10, torch.Generator().manual_seed(3))
    jvps, loss = batched_jvp(setup.model, named, setup.loss_fn, batch, directions, chunk=4)  # 4 + 2: chunks
    fd = [directional_derivative(setup.params, [d[i] for d in directions], 1e-3,
                                 lambda: setup.loss_fn(setup.model, batch))[0] for i in range(6)]
    assert torch.allclose(jvps, torch.tensor(fd), rtol=2e-2, atol=2e-3), (jvps, fd)
    with torch.no_grad():
        assert abs(loss - float(setup.loss_fn(setup.model, batch))) < 1e-5
    est = batched_forward_gradient(setup.model, named, setup.loss_fn, batch, 6, torch.Generator().manual_seed(3),
                                   reference, 10, check_index=0, chunk=4)
    for g, d in zip(est.grad, directions):  # the same draws: sum_i jvp_i v_i
        assert torch.allclose(g, sum(float(fd[i]) * d[i] for i in range(6)), rtol=2e-2, atol=2e-3)
    assert len(est.check) == 6 and torch.allclose(est.check[2], directions[0][2] * jvps[2])


@pytest.mark.parametrize("perturbations, asks_more", [(2, True), (64, False)])
def test_the_server_asks_for_more_perturbations_only_while_the_estimate_is_noisy(tmp_path, tiny_llama, perturbations,
                                                                                 asks_more):
    """The final norm alone (32 values), two clients, the default threshold: 2 forward gradients each leave the
    halves uncorrelated and the server asks the same clients again; 64 each make them agree and it steps."""
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fwdgrad", val_samples=0, zo_base="full", zo_params=["model.norm"],
               clients_per_round=2, rounds=1, perturbations=perturbations, max_extra_requests=1, evaluate=False)
    checks = run_in_process(cfg)["variance_checks"]
    assert checks[0]["more"] is asks_more and len(checks) == 1 + asks_more, checks
    assert (checks[0]["variance"] > cfg.var_threshold) is asks_more


def test_drawn_directions_lean_towards_the_previous_update():
    ref = [torch.randn(64, generator=torch.Generator().manual_seed(1))]
    picked = draw_directions([torch.zeros(64)], 32, ref, 10, torch.Generator().manual_seed(2))[0]
    plain = draw_directions([torch.zeros(64)], 32, None, 10, torch.Generator().manual_seed(2))[0]
    cos = torch.nn.functional.cosine_similarity(picked, ref[0][None], dim=1)
    cos_plain = torch.nn.functional.cosine_similarity(plain, ref[0][None], dim=1)
    assert picked.shape == (32, 64) and float(cos.mean()) > 0.1 > abs(float(cos_plain.mean()))


def test_clients_run_their_forwards_in_the_configured_precision(tmp_path, tiny_llama):
    from edgeft.federated.fedit import local_train

    losses, dtypes = {}, []
    for precision in ("fp32", "bf16"):
        cfg = _cfg(tmp_path, tiny_llama, precision=precision)
        setup = setup_for(cfg, "client")
        q = next(m for n, m in setup.model.named_modules() if n.endswith("layers.0.self_attn.q_proj"))
        hook = q.register_forward_hook(lambda mod, inp, out: dtypes.append((precision, out.dtype)))
        setup.reset_to_w0()
        seeds = fedkseed.candidate_seeds(cfg.seed, cfg.num_seeds)  # zeroth order: forwards only
        _, losses[precision], _ = fedkseed.local_steps(setup, seeds, setup.batches(0, 1, 4, 2), seeded_rng(0, 1, 0, 5),
                                                       cfg.lr, cfg.eps)
        hook.remove()
    assert {d for p, d in dtypes if p == "bf16"} == {torch.bfloat16}
    assert {d for p, d in dtypes if p == "fp32"} == {torch.float32}
    assert losses["bf16"] != losses["fp32"]
    assert np.allclose(losses["bf16"], losses["fp32"], atol=0.05)
    # FedIT's local AdamW steps take it through the Trainer
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fedit", val_samples=0, local_steps=2, lr=1e-3, precision="bf16")
    setup = setup_for(cfg, "client")
    q = next(m for n, m in setup.model.named_modules() if n.endswith("layers.0.self_attn.q_proj.base_layer"))
    seen = []
    q.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    out = local_train(setup, cfg, 0, 1)
    assert out["steps"] == 2 and seen and set(seen) == {torch.bfloat16}


def test_cosine_round_lr_starts_at_lr_falls_every_round_and_is_refused_for_fedit(tmp_path, tiny_llama):
    cfg = _cfg(tmp_path, tiny_llama, rounds=8, lr=1e-3, round_lr="cosine")
    lrs = [cfg.round_learning_rate(r) for r in range(1, 9)]
    assert lrs[0] == 1e-3 and all(a > b > 0 for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.05e-3
    assert abs(lrs[4] - 0.5e-3) < 1e-12  # halfway through the rounds, half the step
    assert {_cfg(tmp_path, tiny_llama, rounds=8, lr=1e-3).round_learning_rate(r) for r in range(1, 9)} == {1e-3}
    with pytest.raises(ValueError, match="round_lr"):
        _cfg(tmp_path, tiny_llama, algorithm="fedit", round_lr="cosine", val_samples=0)


def test_a_rounds_smaller_step_folded_into_the_pool_replays_to_the_clients_model(tmp_path, tiny_llama):
    """A client stepping at a round's lr_r, its scalars added with scale lr_r / lr and replayed at the base lr,
    is rebuilt (what makes round_lr=cosine keep FedKSeed's exact replay)."""
    cfg = _cfg(tmp_path, tiny_llama)
    setup = setup_for(cfg, "client")
    seeds = fedkseed.candidate_seeds(cfg.seed, cfg.num_seeds)
    setup.reset_to_w0()
    round_lr = cfg.lr / 4
    local, _, _ = fedkseed.local_steps(setup, seeds, setup.batches(0, 1, 10, 2), seeded_rng(0, 1, 0, 5), round_lr,
                                       cfg.eps)
    trained = _state(setup)
    order = sorted(local)
    upload = (1.0, np.array(order, dtype=np.uint16), np.array([local[j] for j in order], dtype=np.float32))
    pool = np.zeros(cfg.num_seeds)
    fedkseed.add_to_pool(pool, [upload], scale=round_lr / cfg.lr)
    fedkseed.replay_pool(setup, seeds, pool, cfg.lr)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_state(setup), trained))
    unscaled = np.zeros(cfg.num_seeds)
    fedkseed.add_to_pool(unscaled, [upload])
    fedkseed.replay_pool(setup, seeds, unscaled, cfg.lr)  # without the scale: four times the step, another model
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_state(setup), trained))
