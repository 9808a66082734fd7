"""The progress line within a federated round counted an error reply (a client whose work failed, a dropped
device) as a client that replied: '2/2 clients replied' for a round one client failed. Failed replies are named."""

from types import SimpleNamespace


def test_the_round_progress_names_the_failed_replies(monkeypatch):
    import edgeft.federated.accounting as accounting
    from edgeft.federated.accounting import AccountingGrid, Ledger

    monkeypatch.setattr(accounting, "wire_bytes", lambda m: 10)

    def reply(msg_id, failed):
        return SimpleNamespace(has_error=lambda: failed, metadata=SimpleNamespace(reply_to_message_id=msg_id,
                                                                                  src_node_id=0),
                               content=SimpleNamespace(metric_records={}, config_records={}),
                               error=SimpleNamespace(reason="Error: client failed"))

    class TwoReplies:
        def pull_messages(self, ids):
            return [reply(i, i == "m2") for i in ids]

    class Grid(AccountingGrid):
        def push_messages(self, messages):
            for msg_id, node in (("m1", 11), ("m2", 12)):
                self._dst[msg_id] = node
            return ["m1", "m2"]

    seen = []
    ledger = Ledger()
    ledger.round = 1
    Grid(TwoReplies(), ledger, poll_interval=0.01, on_reply=lambda *a: seen.append(a)).send_and_receive([], timeout=5)
    assert seen == [(2, 2, 1)]
