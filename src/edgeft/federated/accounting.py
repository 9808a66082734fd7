"""Communication and compute accounting: what each client sent and received, per round, on the wire.

`wire_bytes` measures a message with Flower's own serialisation, the bytes a SuperNode and the SuperLink
exchange for it: the message header (metadata protobuf), its object tree, and the content of every
object (records, arrays, array chunks) it is made of. TLS and HTTP framing are not counted.

`AccountingGrid` wraps the Grid a ServerApp receives (in simulation and in deployment alike): every
message pushed and every reply pulled is measured and booked to the client and round it belongs to, and
every message that gets no reply, or an error reply, is logged as a dropped client. The round completes
with the replies that came back.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field
from logging import WARN
from typing import Callable, Iterable, Optional

from flwr.app import Message
from flwr.common.logger import log
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree

from edgeft.errors import EdgeftError


def wire_bytes(message: Message) -> int:
    """Bytes of `message` as Flower serialises it for transport (header + object tree + object contents)."""
    from flwr.app.message import remove_content_from_message

    header = message_to_proto(remove_content_from_message(message)).ByteSize()
    tree = get_object_tree(message).ByteSize()
    body = sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())
    return header + tree + body


@dataclass
class ClientRound:
    round: int
    node: int
    partition: Optional[int] = None
    bytes_down: int = 0
    bytes_up: int = 0
    messages_down: int = 0
    messages_up: int = 0
    compute_s: float = 0.0
    peak_memory_mb: float = 0.0
    status: str = "ok"
    reason: str = ""
    phases: dict = field(default_factory=dict)  # phase -> {"down": bytes, "up": bytes}


class Ledger:
    """Bytes, time and failures per (round, client); events go to the run's events.jsonl."""

    def __init__(self, run=None):
        self.run = run
        self.round = 0
        self.phase = "setup"
        self.partition_of: dict[int, int] = {}
        self.rows: dict[tuple[int, int], ClientRound] = {}

    def row(self, node: int) -> ClientRound:
        key = (self.round, node)
        if key not in self.rows:
            self.rows[key] = ClientRound(self.round, node, self.partition_of.get(node))
        return self.rows[key]

    def sent(self, node: int, nbytes: int) -> None:
        r = self.row(node)
        r.bytes_down += nbytes
        r.messages_down += 1
        r.phases.setdefault(self.phase, {"down": 0, "up": 0})["down"] += nbytes

    def received(self, node: int, nbytes: int) -> None:
        r = self.row(node)
        r.bytes_up += nbytes
        r.messages_up += 1
        r.phases.setdefault(self.phase, {"down": 0, "up": 0})["up"] += nbytes

    def client_metrics(self, node: int, compute_s: float, peak_mb: float) -> None:
        r = self.row(node)
        r.compute_s += compute_s
        r.peak_memory_mb = max(r.peak_memory_mb, peak_mb)

    def dropped(self, node: int, reason: str) -> None:
        r = self.row(node)
        r.status, r.reason = "dropped", reason
        log(WARN, "round %s: %s dropped: %s", self.round, self._who(node), reason)  # one line, as it happens
        if self.run:
            self.run.event("client_dropped", round=self.round, phase=self.phase, node=node,
                           partition=self.partition_of.get(node), reason=reason)

    def _who(self, node: int) -> str:
        pid = self.partition_of.get(node)
        return f"node {node}" if pid is None else f"partition {pid}"

    def round_rows(self, rnd: int) -> list[ClientRound]:
        return [r for (k, _), r in sorted(self.rows.items()) if k == rnd]

    def as_records(self) -> list[dict]:
        return [asdict(r) for r in self.rows.values()]


class AccountingGrid(Grid):
    """A Grid that books every message to the ledger and polls replies without the 3 s sleeps of HttpGrid."""

    def __init__(self, inner: Grid, ledger: Ledger, poll_interval: float = 0.2,
                 on_reply: Optional[Callable[[int, int, int], None]] = None,
                 on_timeout: Optional[Callable[[dict[str, int]], dict[str, str]]] = None):
        """on_reply(done, total, failed): called as replies arrive, so a long round shows per-client progress;
        `failed` of the `done` are error replies (a client that failed answers too, and was counted as replied).
        on_timeout({message id: node}): called with the messages still unanswered at the deadline; returns what
        became of each (appended to the dropped client's reason)."""
        self.inner, self.ledger, self.poll_interval, self.on_reply = inner, ledger, poll_interval, on_reply
        self.on_timeout = on_timeout
        self._dst: dict[str, int] = {}

    # -- plain delegation ----------------------------------------------------------------------
    def set_run(self, run) -> None:
        self.inner.set_run(run)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self):
        return self.inner.get_nodes()

    # -- measured traffic ----------------------------------------------------------------------
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        sizes = [(m.metadata.dst_node_id, wire_bytes(m)) for m in messages]
        ids = list(self.inner.push_messages(messages))
        for msg_id, (node, nbytes) in zip(ids, sizes):
            self.ledger.sent(node, nbytes)
            self._dst[msg_id] = node
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        for m in replies:
            if m.has_error():  # written by the runtime (e.g. the SuperLink for a dead node): no client upload
                continue
            node = self.node_of(m)
            self.ledger.received(node, wire_bytes(m))
            content = m.content  # Message API replies carry a MetricRecord; legacy FitRes (SecAgg+) a ConfigRecord
            mr = content.metric_records.get("metrics") or content.config_records.get("fitres.metrics")
            if mr is not None:
                self.ledger.client_metrics(node, float(mr.get("compute-s", 0.0)), float(mr.get("peak-memory-mb", 0.0)))
        return replies

    def node_of(self, reply: Message) -> int:
        """The client a reply belongs to: the destination of the message it answers."""
        return self._dst.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: Optional[float] = None) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            if STOP.is_set():
                raise Interrupted("stopped by the user (Ctrl-C or a stop signal)")
            got = list(self.pull_messages(pending))
            replies.extend(got)
            if got and self.on_reply:
                self.on_reply(len(replies), len(replies) + len(pending) - len(got), sum(m.has_error() for m in replies))
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending:
                time.sleep(self.poll_interval)
        fate = self.on_timeout({m: self._dst[m] for m in pending}) if pending and self.on_timeout else {}
        for msg_id in pending:
            self.ledger.dropped(self._dst[msg_id], f"no reply within {timeout:.0f} s{fate.get(msg_id, '')}")
        for m in replies:
            if m.has_error():
                self.ledger.dropped(self.node_of(m), f"error reply: {error_summary(m.error.reason)}")
        return replies


# Set when the user stops a simulation (Ctrl-C): the ServerApp's thread, waiting for replies from clients that are
# gone, gives up at its next poll instead of after round_timeout (900 s by default), and the process can exit.
STOP = threading.Event()


class Interrupted(EdgeftError):
    """The user stopped the run."""


def error_summary(reason: str) -> str:
    """The telling line of a client's error (Flower forwards a whole remote traceback)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in (reason or "").splitlines()]
    lines = [line for line in lines if line and not set(line) <= set("^~ ")]
    return lines[-1][:300] if lines else "(no reason given)"
