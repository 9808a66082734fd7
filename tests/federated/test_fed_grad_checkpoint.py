"""FedIT clients with --grad-checkpoint: the same local update with each block recomputed in the backward (a
phone's memory), refused for the zeroth-order algorithms, and carried through a deployed app's run_config."""

import pytest
import torch

from edgeft.federated import fedit
from edgeft.federated.config import FederatedConfig
from edgeft.federated.session import setup_for


def _cfg(tmp_path, model, **kw):
    return FederatedConfig(**{**dict(algorithm="fedit", model=str(model), task="dolly", train_samples=40,
                                     eval_samples=2, clients=2, clients_per_round=2, rounds=1, local_steps=2,
                                     batch_size=2, max_length=32, max_new_tokens=2, threads=1, lr=5e-3,
                                     out=str(tmp_path / "run")), **kw})


def test_a_fedit_client_recomputes_blocks_and_trains_the_same_update(tmp_path, tiny_llama, monkeypatch):
    import transformers.modeling_utils as hf

    calls = []
    real = hf.checkpoint
    monkeypatch.setattr(hf, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    updates = []
    setup = setup_for(_cfg(tmp_path, tiny_llama), "client")  # one cached setup serves both configs
    start = [p.detach().clone() for p in setup.params]
    for on in (False, True, False):
        cfg = _cfg(tmp_path, tiny_llama, grad_checkpoint=on)
        assert setup_for(cfg, "client") is setup
        with torch.no_grad():
            for p, s in zip(setup.params, start):
                p.copy_(s)
        calls.clear()
        fedit.local_train(setup, cfg, pid=0, rnd=1)
        updates.append([p.detach().clone() for p in setup.params])
        assert bool(calls) == on  # and off again for a later run on the same cached model
    for a, b in zip(updates[0], updates[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_zeroth_order_algorithms_refuse_it_and_the_run_config_keeps_it(tmp_path, tiny_llama):
    for algorithm in ("fedkseed", "fwdgrad"):
        with pytest.raises(ValueError, match="grad_checkpoint recomputes activations"):
            _cfg(tmp_path, tiny_llama, algorithm=algorithm, grad_checkpoint=True)
    cfg = _cfg(tmp_path, tiny_llama, grad_checkpoint=True)
    assert FederatedConfig.from_run_config(cfg.to_run_config()).grad_checkpoint is True
