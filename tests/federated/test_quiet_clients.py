"""What a Flower client's Ray worker would show, and how a simulation stops: notices a user can do nothing about stay
out of the terminal, and Ctrl-C ends the run."""

import logging
import warnings


def test_flower_evaluation_notice_and_torch_jit_notice_are_dropped_in_a_client():
    from edgeft.quiet import quiet_libraries

    with warnings.catch_warnings(record=True) as seen:
        # Flower's Ray transport turns every DeprecationWarning on ("once") when a worker imports it
        warnings.filterwarnings("once", category=DeprecationWarning)
        quiet_libraries()  # as session.setup_for does in the worker
        # torch.autograd.forward_ad (fwdgrad's jvp) scripts its decompositions on first use
        warnings.warn_explicit("`torch.jit.script` is deprecated. Please switch to `torch.compile` or "
                               "`torch.export`.", DeprecationWarning, "_script.py", 1488, module="torch.jit._script")
        warnings.warn_explicit("something else is deprecated", DeprecationWarning, "x.py", 1, module="mylib")
    assert [str(w.message) for w in seen] == ["something else is deprecated"]
    record = logging.LogRecord("flwr", logging.WARNING, "", 0, "fraction_evaluate is set to 0.0. Federated "
                               "evaluation will be skipped.", None, None)
    assert not logging.getLogger("flwr").filter(record)  # FedIT's server evaluates the global model itself


def test_ctrl_c_stops_the_servers_wait_for_replies():
    """Ctrl-C kills the Ray clients; the ServerApp's thread went on waiting for their replies for round_timeout
    (900 s), and the process, which waits for that thread, hung instead of exiting."""
    import time

    import pytest

    from edgeft.federated.accounting import STOP, AccountingGrid, Interrupted, Ledger

    class Silent:  # clients that never answer
        def pull_messages(self, ids):
            return []

    class Grid(AccountingGrid):
        def push_messages(self, messages):
            return ["m1"]

    t0 = time.monotonic()
    STOP.set()
    try:
        with pytest.raises(Interrupted, match="stopped by the user"):
            Grid(Silent(), Ledger()).send_and_receive([], timeout=900)
    finally:
        STOP.clear()
    assert time.monotonic() - t0 < 5


def test_a_round_no_client_completes_says_what_became_of_each_client():
    """A round where one device is dead (the SuperLink's error reply) and another too slow (no reply within
    round_timeout) stops with both, per partition: the reason was the first error reply alone, so a loaded machine's
    slow clients read as dead ones."""
    from types import SimpleNamespace

    import pytest

    from edgeft.federated.accounting import AccountingGrid, Ledger
    from edgeft.federated.server import FederationError, successful

    dead = SimpleNamespace(has_error=lambda: True, metadata=SimpleNamespace(reply_to_message_id="m2", src_node_id=0),
                           error=SimpleNamespace(reason="Error: Node Unavailable — no heartbeat"))

    class OneErrorReply:
        def pull_messages(self, ids):
            return [dead] if "m2" in ids else []

    class Grid(AccountingGrid):
        def push_messages(self, messages):
            for msg_id, node in (("m1", 11), ("m2", 12)):
                self._dst[msg_id] = node
                self.ledger.sent(node, 100)
            return ["m1", "m2"]

    ledger = Ledger()
    ledger.round, ledger.partition_of = 1, {11: 0, 12: 2}
    replies = Grid(OneErrorReply(), ledger, poll_interval=0.01).send_and_receive([], timeout=0.6)
    with pytest.raises(FederationError) as err:
        successful(replies, 1, ledger)
    assert str(err.value) == ("round 1: no client completed its work; partition 0 (node 11): no reply within 1 s; "
                              "partition 2 (node 12): error reply: Error: Node Unavailable — no heartbeat")


def test_the_first_partition_query_waits_for_clients_to_start_even_with_a_short_round_timeout(monkeypatch):
    """--round-timeout 2 stopped a simulation before its first round ('only 0 client(s) answered after 2 s'): the
    first query also starts every client's process. Later rounds' queries keep the round's timeout."""
    from edgeft.federated.accounting import Ledger
    from edgeft.federated.config import FederatedConfig
    from edgeft.federated.server import SETUP_TIMEOUT_S, Roster

    class Waits:
        def __init__(self):
            self.timeouts = []

        def get_node_ids(self):
            return [11, 12]

        def send_and_receive(self, msgs, timeout):
            self.timeouts.append(timeout)
            return []

    monkeypatch.setattr("edgeft.federated.server.Message", lambda *a, **k: None)  # Flower builds one in a run only
    grid = Waits()
    roster = Roster(grid, FederatedConfig.from_dict({"algorithm": "fedit", "round_timeout": 2}), Ledger())
    roster.refresh(0)
    roster.refresh(3)
    assert grid.timeouts == [SETUP_TIMEOUT_S, 2]
