"""FedIT stops at a round no client completed, as FedKSeed and fwdgrad do."""

from __future__ import annotations

import pytest

from edgeft.federated.config import FederatedConfig
from edgeft.federated.local_grid import run_in_process


def test_a_fedit_round_without_a_completed_client_stops_the_run_naming_each_client(tmp_path, sst2_bert):
    """FedAvg kept the model and went on; when no round had completed, the run ended in 'the server's arrays do
    not match this model' (Flower's result then holds an empty ArrayRecord)."""
    from edgeft.federated.server import FederationError

    cfg = FederatedConfig(algorithm="fedit", model=str(sst2_bert), task="sst2", train_samples=60, eval_samples=8,
                          clients=2, clients_per_round=2, rounds=2, local_steps=1, batch_size=4, max_length=32,
                          threads=1, dropout=0.999, out=str(tmp_path / "run"), round_timeout=60)
    with pytest.raises(FederationError, match=r"stopped before round 1 of 2: round 1: no client completed its work; "
                                              r"partition \d .*emulated dropout"):
        run_in_process(cfg)
