"""A real Flower deployment on loopback: one SuperLink and three SuperNodes as separate OS processes over
TLS, `flwr run` submitting edgeft's app; one SuperNode is killed mid-round and the round completes."""

import json

import pytest

from edgeft.federated.config import FederatedConfig
from edgeft.federated.deploy import LocalFederation, _alive, write_app


@pytest.mark.slow  # about 10 OS processes and a heartbeat timeout: 1-2 minutes
def test_superlink_and_supernodes_complete_a_round_when_one_disconnects(tmp_path, tiny_llama):
    cfg = FederatedConfig(algorithm="fedkseed-pro", model=str(tiny_llama), task="dolly", train_samples=120,
                          eval_samples=2, clients=3, clients_per_round=3, rounds=1, local_steps=20, batch_size=1,
                          max_length=32, max_new_tokens=2, threads=1, round_timeout=60, out=str(tmp_path / "run"))
    app = write_app(tmp_path / "app", cfg)
    fed = LocalFederation(tmp_path / "fed", supernodes=3)
    with fed:
        assert all(p.poll() is None for p in fed.procs.values())
        run = fed.submit(app)
        # The victim is killed as soon as its SuperNode takes the training message: its ClientApp process
        # is still starting, so the reply never leaves (a device losing power mid-round).
        fed.wait_for_log("supernode-2", "Receiving: train message", 300)
        fed.kill("supernode-2")
        assert run.wait(timeout=300) == 0, fed.logs["flwr-run"].read_text()[-3000:]
    started = list(fed.procs.values())
    assert all(p.poll() is not None for p in started) and not any(_alive(p.pid) for p in started)

    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    first = summary["communication"][0]
    assert first["clients"] == 3 and first["completed"] == 2
    assert [d["partition"] for d in first["dropped"]] == [2]
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    dropped = [e for e in events if e["event"] == "client_dropped"]
    assert len(dropped) == 1 and dropped[0]["partition"] == 2 and dropped[0]["round"] == 1
    assert summary["replay_bit_exact"] and summary["replay_checks"][0]["clients"] == 2
    assert max(first["bytes_up_per_client"]) <= 18_000
    assert summary["metric_after"] is not None
