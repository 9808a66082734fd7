"""The in-process engine (edgeft.federated.local_grid) against the in-process simulations it must agree with,
on a tiny random BERT (SST-2): the same global model bit for bit (FedKSeed) or to float rounding (FedIT), the same
held-out metric per round, and byte counts that are the messages' own wire sizes."""

import numpy as np
import pytest
import torch

from edgeft.federated import fedit, fedkseed
from edgeft.federated.accounting import wire_bytes
from edgeft.federated.config import FederatedConfig
from edgeft.federated.local_grid import LocalGrid, run_in_process
from edgeft.federated.server import global_eval
from edgeft.federated.session import setup_for


def _cfg(tmp_path, model, **kw):
    base = dict(model=str(model), task="sst2", train_samples=240, eval_samples=48, clients=4, clients_per_round=2,
                rounds=2, local_steps=4, batch_size=4, max_length=32, threads=1,
                partition="dirichlet", alpha=0.5, out=str(tmp_path / "run"), round_timeout=60)
    base.update(kw)
    return FederatedConfig(**base)


def _simulated(cfg, simulate) -> tuple[object, list[float]]:
    """The algorithm's own in-process loop on a fresh Setup; held-out metric per round, round 0 first."""
    setup = setup_for(cfg, "simulated")
    setup.reset_to_w0()
    metric = setup.task.metric_name
    by_round = [global_eval(setup, cfg)[metric]]
    simulate(setup, cfg, lambda rnd, *_: by_round.append(global_eval(setup, cfg)[metric]))
    return setup, by_round


def _per_round(summary) -> list[float]:
    return [p[summary["metric_name"]] for p in summary["metric_by_round"]]


@pytest.mark.parametrize("round_lr", ["constant", "cosine"])
def test_in_process_fedkseed_is_fedkseed_simulate_bit_for_bit(tmp_path, sst2_bert, round_lr):
    """The apps' FedKSeed rounds over LocalGrid (messages, pool, replay on the server and on the client) end on
    the model fedkseed.simulate builds at the same seed, bit for bit, with the same metric after every round;
    with a step size that decays over rounds too (the clients replay at the base lr, step at the round's)."""
    cfg = _cfg(tmp_path, sst2_bert, algorithm="fedkseed", num_seeds=64, lr=1e-2, zo_base="bitfit", round_lr=round_lr)
    s = run_in_process(cfg)
    assert [r["lr"] for r in s["rounds"][1:]] == [cfg.round_learning_rate(r) for r in range(1, cfg.rounds + 1)]
    assert s["engine"]["messages"] == cfg.clients + cfg.rounds * cfg.clients_per_round  # queries, then rounds
    assert s["replay_bit_exact"] and s["seeds_in_pool"] > 0
    setup, by_round = _simulated(cfg, fedkseed.simulate)
    assert setup.digest() == s["final_digest"] == setup_for(cfg, "server").digest()
    assert setup.digest() != setup_for(cfg, "nothing-trained").digest()
    assert _per_round(s) == by_round
    # uploads: (uint16 index, float32 scalar) per touched seed plus the metrics record (~2.3 KB)
    ups = [b for c in s["communication"] for b in c["bytes_up_per_client"]]
    assert len(ups) == cfg.rounds * cfg.clients_per_round, ups
    assert max(ups) - min(ups) <= 6 * cfg.local_steps + 16 and max(ups) < 2_500, ups


def test_in_process_fedit_is_fedit_simulate(tmp_path, sst2_bert):
    """FedIT through Flower's FedAvg on LocalGrid ends where fedit.simulate ends (the same clients, batches and
    weighting; Flower averages in float32, simulate in float64: 1e-8 after one round, AdamW's normalisation makes
    it ~1e-6 after two), and each client-round moves the LoRA arrays both ways."""
    cfg = _cfg(tmp_path, sst2_bert, algorithm="fedit", lr=5e-3)
    s = run_in_process(cfg)
    server = setup_for(cfg, "server")
    setup, by_round = _simulated(cfg, fedit.simulate)
    assert any(not torch.equal(p, w) for p, w in zip(setup.params, setup.w0))
    moved = max(float((p - w).abs().max()) for p, w in zip(setup.params, setup.w0))
    for name, a, b in zip(setup.names, server.params, setup.params):
        assert float((a - b).abs().max()) < 1e-3 * moved, name
    assert np.allclose(_per_round(s), by_round, atol=1e-9)
    # each upload is the trained arrays as Flower serialises them (checked against a message holding just them)
    # plus the reply's header and metrics; downloads the same, except that Flower sends identical arrays once
    # (round 1's zero LoRA B matrices), so they may be smaller
    from flwr.app import Message, MessageType, RecordDict

    arrays = wire_bytes(Message(RecordDict({"arrays": server.arrays()}), dst_node_id=1,
                                message_type=MessageType.TRAIN))
    ups = [b for c in s["communication"] for b in c["bytes_up_per_client"]]
    downs = [b for c in s["communication"] for b in c["bytes_down_per_client"]]
    assert len(ups) == len(downs) == cfg.rounds * cfg.clients_per_round
    assert all(arrays < b < arrays + 1_500 for b in ups), (arrays, ups)
    assert all(arrays / 2 < b < arrays + 1_500 for b in downs), (arrays, downs)


def _content_bytes(message) -> int:
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(o.deflate()) for o in get_all_nested_objects(message.content).values())


def test_local_grid_replies_like_flower_and_counts_what_travels():
    """A reply comes back through Flower's LinkState with reply_to, the client's node id as its source and the
    request's group id; the content a ClientApp's reply has when built is, byte for byte, what arrives; a ClientApp
    that raises answers with an error reply instead of stopping the server."""
    from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    built = {}
    app = ClientApp()

    @app.query()
    def hello(msg, context):
        if int(context.node_config["partition-id"]) == 2:
            raise RuntimeError("device lost")
        reply = Message(RecordDict({"metrics": MetricRecord({"partition-id": int(context.node_config["partition-id"]),
                                                             "big": list(range(200))})}), reply_to=msg)
        built[int(context.node_config["partition-id"])] = _content_bytes(reply)
        return reply

    grid = LocalGrid(app, 3)
    nodes = sorted(grid.get_node_ids())
    msgs = [Message(RecordDict({"config": ConfigRecord({"ask": "partition"})}), dst_node_id=n,
                    message_type=MessageType.QUERY, group_id="7") for n in nodes]
    replies = list(grid.send_and_receive(msgs, timeout=5))
    assert len(replies) == 3
    by_src = {m.metadata.src_node_id: m for m in replies}
    assert set(by_src) == set(nodes)
    sent = {m.metadata.dst_node_id: m.metadata.message_id for m in msgs}
    for node, m in by_src.items():
        assert m.metadata.reply_to_message_id == sent[node] and m.metadata.group_id == "7"
        pid = grid.partition_of[node]
        if pid == 2:
            assert m.has_error() and "device lost" in m.error.reason
        else:
            assert m.content["metrics"]["partition-id"] == pid
            assert _content_bytes(m) == built[pid] > 400  # what the client built is what arrived
            assert wire_bytes(m) > built[pid]  # plus the header and the object tree
