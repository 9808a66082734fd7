"""Run a federated configuration in ONE process: the real ServerApp rounds and ClientApp, no Ray, no threads.

`LocalGrid` is Flower's own `InMemoryGrid` on Flower's own in-memory LinkState, set up as Flower's simulation
sets it up (one run, `clients` registered SuperNodes with partition-id / num-partitions node configs and
their Contexts). What the simulation engine does with Ray (a worker takes each message from the LinkState,
an actor runs the ClientApp on a pickled copy, the reply goes back into the LinkState with a fresh message
id) is done here synchronously, inside `pull_messages`: so the messages, their metadata (reply_to, node
ids, group ids, ttl, delivered_at) and therefore the bytes `AccountingGrid` measures are Flower's, and every
algorithm's `run_server` runs unchanged. One client `Setup` serves every partition, as one simulation
actor does.

`run_in_process(cfg, device)` is `simulation.run_federated` on this grid; with device "cuda" the server's
and the client's Setups live on the GPU (bench/fed_quality.py --device cuda).
"""

from __future__ import annotations

import copy
import traceback
from typing import Callable, Iterable, Optional
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.superlink.grid import InMemoryGrid

from edgeft.federated.config import FederatedConfig


def _transport(message: Message) -> Message:
    """What the other side receives: the message deflated into Flower's wire objects (the bytes
    `accounting.wire_bytes` counts) and inflated again, so nothing is shared with the sender."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(message).items()}
    received = inflate_object_from_contents(message.object_id, contents)
    received.metadata.__dict__.update(copy.deepcopy(message.metadata.__dict__))
    return received


class LocalGrid(InMemoryGrid):
    """Flower's in-memory Grid whose messages are answered by `client_app` in this process, when pulled."""

    def __init__(self, client_app: ClientApp, num_nodes: int):
        from flwr.common.constant import RUN_ID_NUM_BYTES, TASK_ID_NUM_BYTES
        from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
        from flwr.server.superlink.fleet.vce.vce_api import _register_node_info_stores, _register_nodes
        from flwr.server.superlink.linkstate import LinkStateFactory
        from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
        from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
        from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
        from flwr.supercore.object_store import ObjectStoreFactory
        from flwr.supercore.run import Run
        from flwr.superlink.federation import NoOpFederationManager

        factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
        super().__init__(state_factory=factory, pull_interval=0.0)
        run = Run.create_empty(run_id=generate_rand_int_from_bytes(RUN_ID_NUM_BYTES))
        run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
        run.federation_id = NOOP_FEDERATION_ID
        self.state.run_ids[run.run_id] = RunRecord(run=run)
        self.state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id, run_id=run.run_id)
        self.set_run(run)
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        # what a Message created by the ServerApp is stamped with (as run_simulation does)
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, SUPERLINK_NODE_ID
        self.client_app = client_app
        self.partition_of = _register_nodes(num_nodes, factory)  # node id -> partition id
        self.stores = _register_node_info_stores(self.partition_of, run)
        self.messages_handled = 0

    def context(self) -> Context:
        """The ServerApp's Context (as run_simulation builds it)."""
        from flwr.app import UserConfig

        return Context(run_id=self.run.run_id, node_id=0, node_config=UserConfig(), state=RecordDict(),
                       run_config=UserConfig())

    def _deliver(self) -> None:
        """Every message waiting in the LinkState goes to its node's ClientApp; replies go back into it."""
        for node_id in self.partition_of:
            for msg in self.state.get_message_ins(node_id=node_id, limit=None):
                store = self.stores[node_id]
                context = store.retrieve_context(run_id=msg.metadata.run_id)
                try:
                    reply = _transport(self.client_app(message=_transport(msg), context=context))
                    store.update_context(msg.metadata.run_id, context=context)
                except Exception as ex:  # reported as Flower's engine reports a ClientApp that raised
                    reason = f"{type(ex)}:<'{ex}'>\n{traceback.format_exc()}"
                    reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
                reply.metadata.__dict__["_message_id"] = str(uuid4())
                self.state.store_message_res(reply)
                self.messages_handled += 1

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self._deliver()
        return super().pull_messages(message_ids)


def to_device(setup, device: str) -> None:
    """Moves a Setup's model (its params keep their identity) and w0; batches follow inside the loss."""
    import torch

    if device == "cpu" or getattr(setup, "_device", "cpu") == device:
        return
    setup.model.to(device)
    setup.w0 = [w.to(device) for w in setup.w0]
    loss_fn = setup.loss_fn

    def on_device(model, batch):
        return loss_fn(model, {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()})

    setup.loss_fn = on_device
    setup._device = device


def run_in_process(cfg: FederatedConfig, device: str = "cpu", progress: Optional[Callable] = None) -> dict:
    """`cfg` with the apps' own server rounds and client handlers on a `LocalGrid`; returns the run's summary
    (metrics.json: metric per round, bytes up/down per client-round, client compute time and peak memory)."""
    from edgeft.federated.apps import build_client_app, run_server
    from edgeft.federated.data import data_and_validation
    from edgeft.federated.session import setup_for

    data_and_validation(cfg)
    if device != "cpu":  # both Setups are cached per process: moved once, found there by the apps
        for role in ("server", "client"):
            to_device(setup_for(cfg, role), device)
    grid = LocalGrid(build_client_app(cfg), cfg.clients)
    summary = run_server(cfg, grid, grid.context(), progress)
    summary["engine"] = {"name": "inprocess", "device": device, "messages": grid.messages_handled}
    return summary
