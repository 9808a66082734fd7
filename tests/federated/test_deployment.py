"""A real Flower deployment on loopback: a SuperLink and SuperNodes as separate OS processes over TLS,
`flwr run` submitting edgeft's app. SuperNodes are killed mid-round (the round completes), come back and
train again, or are too few (the run stops early, keeping the rounds done); unknown SuperNodes are
refused, a duplicate partition-id does not crash the run, a plaintext SuperNode is told why it cannot connect."""

import json
import os
import subprocess
import sys

import pytest

from edgeft.federated.config import FederatedConfig
from edgeft.federated.deploy import (LocalFederation, check_superlink, make_certificates, make_node_keys,
                                     write_app)
from edgeft.processes import alive, stop_trees


@pytest.mark.slow  # about 10 OS processes and a 30 s round timeout: about a minute
def test_superlink_and_supernodes_complete_a_round_when_one_disconnects(tmp_path, tiny_llama):
    # The lost node is given up by edgeft's round timeout: Flower's heartbeat would notice it only 38-60 s after
    # the kill, later than this timeout (the next test covers that path). The two live ClientApps answer in
    # about 10 s on 2 cores (their training takes 0.3 s; the rest is the processes starting).
    cfg = FederatedConfig(algorithm="fedkseed-pro", model=str(tiny_llama), task="dolly", train_samples=120,
                          eval_samples=2, clients=3, clients_per_round=3, rounds=1, local_steps=20, batch_size=1,
                          max_length=32, max_new_tokens=2, threads=1, round_timeout=30, out=str(tmp_path / "run"))
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
    assert all(p.poll() is not None for p in started) and not any(alive(p.pid) for p in started)

    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    first = summary["communication"][0]
    assert first["clients"] == 3 and first["completed"] == 2
    assert [d["partition"] for d in first["dropped"]] == [2]
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    dropped = [e for e in events if e["event"] == "client_dropped"]
    assert len(dropped) == 1 and dropped[0]["partition"] == 2 and dropped[0]["round"] == 1
    assert dropped[0]["reason"] == "no reply within 30 s", dropped[0]
    assert summary["replay_bit_exact"] and summary["replay_checks"][0]["clients"] == 2
    assert max(first["bytes_up_per_client"]) <= 18_000
    assert summary["metric_after"] is not None


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.mark.slow  # a SuperNode loss found by Flower's heartbeat (38-60 s), 6 ClientApp starts: 2-4 minutes
def test_a_restarted_supernode_claims_its_partition_again_and_too_few_clients_stop_the_run(tmp_path, tiny_llama):
    cfg = FederatedConfig(algorithm="fedkseed", model=str(tiny_llama), task="dolly", train_samples=120, eval_samples=2,
                          clients=3, clients_per_round=3, min_clients=2, rounds=3, local_steps=20, batch_size=1,
                          max_length=32, max_new_tokens=2, threads=1, round_timeout=150, out=str(tmp_path / "run"))
    app = write_app(tmp_path / "app", cfg)
    # Without node authentication a restarted SuperNode registers at once under a new node id (with it, Flower
    # lets the same key in again only once the SuperLink has marked the old session offline).
    fed = LocalFederation(tmp_path / "fed", supernodes=3, auth=False)
    with fed:
        run = fed.submit(app)
        fed.wait_for_log("supernode-2", "Receiving: train message", 300)
        fed.kill("supernode-2")  # mid-round 1, then the device comes back
        offset = fed.logs["supernode-2"].stat().st_size
        fed.start_supernode("supernode-2", 2)
        fed.wait_for_log("supernode-2", "SuperNode ID", 120, after=offset)
        # round 2: once partition 2 trains again, two devices are switched off for good (SIGTERM)
        offset0 = fed.logs["supernode-0"].read_bytes().find(b"Receiving: train message") + 1
        fed.wait_for_log("supernode-0", "Receiving: train message", 300, after=offset0)
        stop_trees([fed.procs["supernode-0"], fed.procs["supernode-1"]])
        code = run.wait(timeout=400)
    out = fed.logs["flwr-run"].read_text()  # `flwr run --stream` exits 0 whatever the ServerApp did
    assert code == 0 and "stopped before round 3 of 3" in out, out[-3000:]

    run_dir = tmp_path / "run"
    events = _events(run_dir)
    joined = [e for e in events if e["event"] == "client_joined"]
    assert len(joined) == 1 and joined[0]["partition"] == 2 and joined[0]["round"] == 2
    old_node, new_node = joined[0]["previous_node"], joined[0]["node"]
    assert old_node != new_node
    stopped = [e for e in events if e["event"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["round"] == 3 and stopped[0]["rounds_done"] == 2
    assert "min_clients=2" in stopped[0]["reason"]

    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["stopped"]["round"] == 3
    first, second = summary["communication"][:2]
    assert first["clients"] == 3 and first["completed"] == 2 and [d["node"] for d in first["dropped"]] == [old_node]
    assert second["clients"] == 3 and summary["communication"][2]["clients"] == 0
    ledger = json.loads((run_dir / "ledger.json").read_text())
    trained = [r for r in ledger if r["round"] == 2 and r["status"] == "ok" and r["messages_down"]]
    assert [(r["node"], r["partition"]) for r in trained if r["partition"] == 2] == [(new_node, 2)]
    assert summary["replay_bit_exact"] and [c["round"] for c in summary["replay_checks"]] == [1, 2]
    assert (run_dir / "adapter").is_dir()


@pytest.fixture(scope="module")
def auth_fed(tmp_path_factory):
    """SuperLink with TLS and SuperNode authentication; SuperNodes 0 and 1 registered and connected."""
    with LocalFederation(tmp_path_factory.mktemp("auth-fed"), supernodes=2) as fed:
        assert fed.auth and "--enable-supernode-auth" in fed.procs["superlink"].args
        yield fed


@pytest.mark.slow  # a SuperLink, four SuperNodes and one round: about 30-60 s
def test_unknown_supernodes_are_refused_and_a_duplicate_partition_id_does_not_crash_the_run(auth_fed, tmp_path,
                                                                                               tiny_llama):
    fed = auth_fed
    stranger = make_node_keys(tmp_path / "stranger", 1)  # a key pair nobody registered
    fed.start_supernode("no-key", 1)
    fed.start_supernode("unknown-key", 1, stranger["node-0-key"])
    for name in ("no-key", "unknown-key"):
        assert fed.procs[name].wait(timeout=120) != 0, fed.logs[name].read_text()[-2000:]
    assert "must be registered" in fed.logs["no-key"].read_text()
    assert "Failed to activate SuperNode" in fed.logs["unknown-key"].read_text()

    twin = make_node_keys(tmp_path / "twin", 1)  # a registered device that claims partition 0 as well
    fed.register(twin["node-0-pub"])
    fed.start_supernode("twin", 0, twin["node-0-key"])
    fed.wait_for_log("twin", "SuperNode ID", 120)

    cfg = FederatedConfig(algorithm="fedkseed", model=str(tiny_llama), task="dolly", train_samples=80, eval_samples=2,
                          clients=2, clients_per_round=2, rounds=1, local_steps=5, batch_size=1, max_length=32,
                          max_new_tokens=2, threads=1, round_timeout=120, out=str(tmp_path / "run"))
    run = fed.submit(write_app(tmp_path / "app", cfg))
    assert run.wait(timeout=300) == 0, fed.logs["flwr-run"].read_text()[-3000:]
    events = _events(tmp_path / "run")
    refused = [e for e in events if e["event"] == "client_refused"]
    assert len(refused) == 1 and refused[0]["partition"] == 0
    assert "duplicate partition-id 0" in refused[0]["reason"] and "--node-config" in refused[0]["reason"]
    assert next(e for e in events if e["event"] == "clients")["partitions"] == [0, 1]
    first = json.loads((tmp_path / "run" / "metrics.json").read_text())["communication"][0]
    assert first["clients"] == 2 and first["completed"] == 2


@pytest.mark.slow  # shares the SuperLink above
def test_a_plaintext_supernode_against_a_tls_superlink_is_told_why(auth_fed, tmp_path):
    fed = auth_fed
    hint = check_superlink(fed.address, insecure=True)
    assert hint and "serves TLS" in hint and "--root-certificates" in hint
    assert check_superlink(fed.address, fed.certs / "ca.crt") is None
    other = make_certificates(tmp_path / "other", ["127.0.0.1"])
    assert "does not trust" in check_superlink(fed.address, other["ca"])

    cmd = [sys.executable, "-m", "edgeft.cli", "federate", "supernode", "--insecure", "--superlink", fed.address,
           "--node-config", "partition-id=0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 2 and "serves TLS" in done.stdout + done.stderr, done.stdout + done.stderr
