"""The algorithms end to end in Flower's simulation engine, on a tiny random Llama (mechanics, not quality)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from edgeft.errors import ConfigError
from edgeft.federated.config import FederatedConfig
from edgeft.federated.fedkseed import candidate_seeds, nonzero_pool, pro_probabilities, replay
from edgeft.federated.session import seeded_rng, setup_for
from edgeft.federated.simulation import run_federated


def _cfg(tmp_path, model, **kw):
    base = dict(model=str(model), task="dolly", train_samples=240, eval_samples=4, clients=3, clients_per_round=2,
                rounds=2, local_steps=5, batch_size=2, max_length=40, max_new_tokens=4, threads=1,
                out=str(tmp_path / "run"), round_timeout=180)
    base.update(kw)
    return FederatedConfig(**base)


def _events(cfg, kind):
    lines = (tmp := __import__("pathlib").Path(cfg.out) / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_fedkseed_uploads_under_18kb_and_replay_is_bit_exact(tmp_path, tiny_llama):
    """K = 4096 seeds and FedKSeed's 200 local steps: each upload measured on the wire stays under 18 KB,
    every client's model rebuilt from the pool matches the server's bit for bit (checked each round over
    the wire), and an independent replay of the saved pool reproduces the server's saved adapter exactly."""
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fedkseed", num_seeds=4096, local_steps=200, batch_size=1)
    s = run_federated(cfg)
    ups = [b for c in s["communication"] for b in c["bytes_up_per_client"]]
    assert len(ups) == 4 and max(ups) <= 18_000
    assert s["replay_bit_exact"] and [c["clients"] for c in s["replay_checks"]] == [2, 2]
    assert 100 < s["seeds_in_pool"] <= 800

    pool = np.load(tmp_path / "run" / "seed_pool.npz")
    assert np.array_equal(pool["seeds"], candidate_seeds(cfg.seed, 4096))
    fresh = setup_for(cfg, "replayer")
    before = fresh.digest()
    index, values = nonzero_pool(pool["pool"])
    replay(fresh, pool["seeds"], index.astype(np.int64), values, float(pool["lr"]))
    assert fresh.digest() == s["final_digest"] != before
    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    for name, p in zip(fresh.names, fresh.params):
        assert torch.equal(saved[name.replace(".default", "")], p.detach()), name


def test_fedkseed_on_norm_weights_moves_only_them_and_replays_bit_exact(tmp_path, tiny_llama):
    """zo_params narrows what FedKSeed perturbs (here the RMSNorm weights of the full model): the server's
    model after the run differs from w0 in those weights only, clients' replays match it bit for bit, and a
    selection that matches nothing is refused with the parameter names it could have used."""
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fedkseed", zo_base="full", zo_params=["norm"], rounds=1,
               local_steps=20, lr=1e-3)
    s = run_federated(cfg)
    assert s["replay_bit_exact"] and s["seeds_in_pool"] > 0
    assert max(b for c in s["communication"] for b in c["bytes_up_per_client"]) <= 18_000

    fresh = setup_for(cfg, "replayer")
    assert fresh.names and all("norm" in n for n in fresh.names)
    original = {n: p.detach().clone() for n, p in fresh.model.named_parameters()}
    pool = np.load(tmp_path / "run" / "seed_pool.npz")
    index, values = nonzero_pool(pool["pool"])
    replay(fresh, pool["seeds"], index.astype(np.int64), values, float(pool["lr"]))
    assert fresh.digest() == s["final_digest"]
    replayed = dict(fresh.model.named_parameters())
    saved = load_file(str(tmp_path / "run" / "adapter" / "model.safetensors"))
    moved = {n for n, t in saved.items() if n in original and not torch.equal(t, original[n])}
    assert moved and all("norm" in n for n in moved)  # only the selected weights left w0
    assert all(torch.equal(saved[n], replayed[n].detach()) for n in moved)
    with pytest.raises(ConfigError, match="matches none of full's parameters"):
        setup_for(cfg.model_copy(update={"zo_params": ["no_such_module"]}), "client")


def test_pro_probabilities_favour_seeds_with_large_scalars():
    history = [[0.0], [0.0, 5.0, -5.0], [0.0, 1e6]]
    p = pro_probabilities(history, clip=1000.0)
    assert p.sum() == pytest.approx(1.0) and p[0] < p[1] < p[2]
    assert p[2] / p[0] == pytest.approx(np.e, rel=1e-6)  # min-max normalised, then softmax


def _seed_with_one_drop(cfg, pids):
    for seed in range(200):
        chosen = seeded_rng(seed, 1, 11).choice(pids, size=cfg.clients_per_round, replace=False)
        drops = [int(p) for p in chosen if seeded_rng(seed, 1, int(p), 7).random() < cfg.dropout]
        if 0 < len(drops) < len(chosen):
            return seed, drops
    raise AssertionError("no seed found")


def test_fedit_round_completes_when_a_client_fails_mid_round(tmp_path, tiny_llama):
    """Through the CLI: `edgeft federate` with emulated device failures (seeded so one client of round 1 dies)."""
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fedit", clients=4, clients_per_round=3, dropout=0.3,
               method_options={"r": 4})
    seed, drops = _seed_with_one_drop(cfg, list(range(4)))
    cfg = cfg.model_copy(update={"seed": seed})
    args = ["federate", "--algorithm", "fedit", "--model", cfg.model, "--task", "dolly", "--train-samples", "240",
            "--eval-samples", "4", "--clients", "4", "--clients-per-round", "3", "--rounds", "2", "--local-steps", "5",
            "--batch-size", "2", "--max-length", "40", "--max-new-tokens", "4", "--threads", "1", "--dropout", "0.3",
            "--seed", str(seed), "--option", "r=4", "--out", cfg.out]
    proc = subprocess.run([sys.executable, "-m", "edgeft.cli", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dropped client-rounds" in proc.stdout
    s = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (s["config"]["seed"], s["config"]["dropout"], s["config"]["algorithm"]) == (seed, 0.3, "fedit")
    first = s["communication"][0]
    assert first["clients"] == 3 and first["completed"] == 3 - len(drops)
    logged = [e for e in _events(cfg, "client_dropped") if e["round"] == 1]
    assert sorted(e["partition"] for e in logged) == sorted(drops)
    assert all("lost mid-round 1" in e["reason"] for e in logged)
    assert [r["round"] for r in s["rounds"]] == [0, 1, 2] and s["metric_after"] is not None
    # FedIT sends adapters only: a LoRA r=4 state of the tiny model, not the whole model
    assert max(first["bytes_up_per_client"]) < 60_000


def test_fwdgrad_asks_for_more_perturbations_when_the_variance_is_high(tmp_path, tiny_llama):
    """4 forward gradients per client leave the halves of the pooled estimate uncorrelated: at the default
    threshold the server asks the same clients once more (max_extra_requests) in every round."""
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fwdgrad", perturbations=4, max_extra_requests=1,
               method_options={"r": 2})
    replies = []

    def progress(rnd, row):
        pass

    progress.clients = lambda done, total, failed: replies.append((done, total))  # per-client progress within a round
    s = run_federated(cfg, progress=progress)
    assert replies.count((2, 2)) >= 4 and all(0 < d <= t for d, t in replies)  # 2 rounds x 2 requests, 2 clients
    checks = s["variance_checks"]
    assert [(c["round"], c["attempt"], c["more"]) for c in checks] == [(1, 0, True), (1, 1, False),
                                                                        (2, 0, True), (2, 1, False)]
    assert [c["perturbations"] for c in checks] == [8, 16, 8, 16]
    assert all(c["variance"] > cfg.var_threshold for c in checks)
    assert all(c["completed"] == 2 for c in s["communication"])
    # two requests per client per round, each carrying parameters and the previous update
    assert all(r["messages_down"] == 2 for r in json.loads((tmp_path / "run" / "ledger.json").read_text())
               if r["round"] > 0)


def test_fedit_with_secagg_plus_and_local_dp(tmp_path, tiny_llama):
    """Flower's SecAgg+ workflow and LocalDpMod on FedIT: the round completes, costing 4 exchanges per client."""
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fedit", clients=3, clients_per_round=3, rounds=1, secagg=True,
               dp="local", dp_clip=1.0, dp_epsilon=50.0, method_options={"r": 2})
    s = run_federated(cfg)
    rows = [r for r in json.loads((tmp_path / "run" / "ledger.json").read_text()) if r["round"] == 1]
    assert len(rows) == 3 and all(r["messages_down"] == 4 and r["messages_up"] == 4 for r in rows)
    assert all(set(r["phases"]) == {"secagg"} for r in rows)
    assert all(r["compute_s"] > 0 for r in rows)  # client metrics travel through SecAgg+ too
    assert s["privacy"]["secagg"] and s["privacy"]["dp"] == "local"
    assert s["metric_after"] is not None


def test_fedkseed_returns_the_round_with_the_lowest_validation_loss(tmp_path, tiny_llama):
    """val_samples: the server keeps training rows out of every client, measures the global model's loss
    on them after every round (round 0 = untuned included), and the run returns the lowest round's model:
    the saved pool, replayed by anyone, rebuilds a model whose validation loss is that minimum."""
    from edgeft.federated.session import data_and_validation, data_for

    cfg = _cfg(tmp_path, tiny_llama, algorithm="fedkseed", zo_base="full", zo_params=["norm"], rounds=3,
               local_steps=10, lr=5e-2, val_samples=16)
    task, parts, val = data_and_validation(cfg)
    assert len(val) == 16 and not set(val) & {i for p in parts for i in p}
    plain = cfg.model_copy(update={"val_samples": 0})
    assert data_and_validation(plain)[2] == [] and data_for(plain)[1] != parts
    s = run_federated(cfg)
    losses = [(r["round"], r["loss"]) for r in s["val_loss_by_round"]]
    assert [r for r, _ in losses] == [0, 1, 2, 3]
    best_round, best = min(losses, key=lambda x: x[1])
    assert s["selected_round"] == best_round
    pool = np.load(tmp_path / "run" / "seed_pool.npz")
    fresh = setup_for(cfg, "replayer")
    index, values = nonzero_pool(pool["pool"])
    replay(fresh, pool["seeds"], index.astype(np.int64), values, float(pool["lr"]))
    assert fresh.digest() == s["final_digest"]
    assert fresh.val_loss(cfg.eval_batch_size) == pytest.approx(best, rel=1e-6)
    if best_round != 3:
        assert s["metric_after"] == s["selected_metrics"]["rougeL"]
    with pytest.raises(Exception, match="val_samples"):
        FederatedConfig(**{**cfg.model_dump(), "algorithm": "fedit", "zo_params": None})
