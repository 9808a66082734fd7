"""FedIT (Zhang et al., "Towards Building the Federated GPT"): clients train LoRA adapters locally, the
server averages them weighted by the clients' sample counts; only the adapters travel.

The server side is Flower's own FedAvg strategy (seeded client sampling added), optionally wrapped in
Flower's DP strategy (client-side clipping, server-side noise). With secure aggregation the run goes
through Flower's SecAgg+ workflow, which is built on Flower's legacy FitIns/FitRes messages; the client
handler below answers both forms.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg

from edgeft.federated.accounting import AccountingGrid, Ledger
from edgeft.federated.config import FederatedConfig
from edgeft.federated.session import Setup, Work, maybe_drop, seeded_rng
from edgeft.federated.server import Roster, RoundLog, TooFewClients, draw_clients, sample, successful
from edgeft.train.loop import Trainer, TrainConfig

# -- client ----------------------------------------------------------------------------------------


def local_train(setup: Setup, cfg: FederatedConfig, pid: int, rnd: int) -> dict:
    """cfg.local_steps AdamW steps of LoRA on this client's shard, from the adapters already loaded."""
    feats = setup.client_features(pid)
    rng = seeded_rng(cfg.seed, rnd, pid, 3)
    take = cfg.local_steps * cfg.batch_size
    picks = rng.choice(len(feats), size=take, replace=take > len(feats))
    train = TrainConfig(epochs=1, batch_size=cfg.batch_size, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                        warmup_ratio=0.0, scheduler=cfg.lr_schedule, max_grad_norm=1.0, device=setup.device,
                        precision=cfg.precision, grad_checkpoint=cfg.grad_checkpoint,
                        seed=int(rng.integers(2**31)))
    trainer = Trainer(setup.model, setup.method, setup.featurizer, [feats[int(i)] for i in picks], train,
                      setup.loss_fn)
    maybe_drop(cfg, rnd, pid)
    with torch.random.fork_rng(devices=[]):  # LoRA dropout drawn from (seed, round, client): a round is reproducible
        torch.manual_seed(train.seed)
        result = trainer.fit()
    setup.model.eval()
    return {"num-examples": len(feats), "train-loss": float(np.mean(result.losses)) if result.losses else 0.0,
            "steps": result.steps}


def simulate(setup: Setup, cfg: FederatedConfig, on_round=None) -> None:
    """FedIT in one process, without Flower: the same client sampling rule as the server (`server.sample`,
    every client connected), the same client work (`local_train`) and FedAvg's weighting by the clients'
    sample counts. For comparisons with fedkseed.simulate at the same rounds (bench/fed_kseed_sweep.py);
    bytes, processes and failures are the Flower runs' business. Calls on_round(rnd) with the round's
    global adapters in `setup`."""
    for rnd in range(1, cfg.rounds + 1):
        chosen = draw_clients(cfg, rnd, range(cfg.clients))
        start = [p.detach().clone() for p in setup.params]
        total, summed = 0, [torch.zeros_like(p, dtype=torch.float64) for p in setup.params]
        for pid in chosen:
            with torch.no_grad():
                for p, w in zip(setup.params, start):
                    p.copy_(w)
            n = local_train(setup, cfg, pid, rnd)["num-examples"]
            total += n
            for acc, p in zip(summed, setup.params):
                acc += n * p.detach().double()
        with torch.no_grad():
            for p, acc in zip(setup.params, summed):
                p.copy_((acc / total).to(p.dtype))
        if on_round is not None:
            on_round(rnd)


def handle_train(setup: Setup, cfg: FederatedConfig, pid: int, msg: Message) -> Message:
    """A FedIT round on this client, for a Message-API request or a legacy (SecAgg+) FitIns."""
    content = msg.content
    if "fitins.parameters" in content.array_records:
        return _handle_legacy(setup, cfg, pid, msg)
    rnd = int(content["config"]["server-round"])
    with Work(setup.device) as work:
        setup.load_arrays(content["arrays"])
        metrics = local_train(setup, cfg, pid, rnd)
    metrics.update(work.metrics(), **{"partition-id": pid})
    return Message(RecordDict({"arrays": setup.arrays(), "metrics": MetricRecord(metrics)}), reply_to=msg)


def _handle_legacy(setup: Setup, cfg: FederatedConfig, pid: int, msg: Message) -> Message:
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    rnd = int(fitins.config["server-round"])
    with Work(setup.device) as work:
        setup.load_arrays(_record(setup, parameters_to_ndarrays(fitins.parameters)))
        metrics = local_train(setup, cfg, pid, rnd)
    metrics.update(work.metrics(), **{"partition-id": pid})
    new = [p.detach().cpu().numpy().copy() for p in setup.params]
    res = FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters(new), int(metrics["num-examples"]), metrics)
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


def _record(setup: Setup, ndarrays) -> ArrayRecord:
    """Flower's legacy parameter list (in the order of setup.names) as a named ArrayRecord."""
    return ArrayRecord({n: Array(np.asarray(a)) for n, a in zip(setup.names, ndarrays)})


# -- server: Flower's FedAvg, seeded sampling, optional DP ----------------------------------------------


class SeededFedAvg(FedAvg):
    """FedAvg that samples this round's clients with edgeft's seeded sampler and books the round."""

    def __init__(self, cfg: FederatedConfig, nodes: Roster, ledger: Ledger, **kwargs):
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=cfg.clients_per_round,
                         min_available_nodes=cfg.clients_per_round, **kwargs)
        self.cfg, self.nodes, self.ledger = cfg, nodes, ledger

    def configure_train(self, server_round, arrays, config, grid):
        self.ledger.round, self.ledger.phase = server_round, "train"
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, sample(grid, self.cfg, self.nodes, server_round),
                                        MessageType.TRAIN)

    def aggregate_train(self, server_round, replies):
        """A round that no client completed stops the run, saying what became of each client, as in the other
        algorithms: FedAvg kept the model and went on, and a run none of whose rounds completed ended in 'the
        server's arrays do not match this model' (Flower's result then holds no arrays)."""
        replies = list(replies)
        successful(replies, server_round, self.ledger)
        return super().aggregate_train(server_round, replies)


def run_server(grid: AccountingGrid, cfg: FederatedConfig, ledger: Ledger, setup: Setup, nodes: Roster,
               log: RoundLog, context) -> dict:
    if cfg.secagg:
        return _run_secagg(grid, cfg, ledger, setup, log, context)
    strategy = SeededFedAvg(cfg, nodes, ledger)
    if cfg.dp == "central":
        strategy = DifferentialPrivacyClientSideFixedClipping(strategy, noise_multiplier=cfg.dp_noise,
                                                              clipping_norm=cfg.dp_clip,
                                                              num_sampled_clients=cfg.clients_per_round)
    clock = {"t": time.perf_counter()}

    def evaluate_fn(rnd: int, arrays: ArrayRecord):
        setup.load_arrays(arrays)
        metrics = log.evaluate(setup, rnd)
        log.end_round(rnd, time.perf_counter() - clock["t"] if rnd else 0.0, metrics)
        clock["t"] = time.perf_counter()
        return MetricRecord({k: float(v) for k, v in (metrics or {}).items()}) if metrics else None

    try:
        result = strategy.start(grid, setup.arrays(), num_rounds=cfg.rounds, timeout=cfg.round_timeout,
                                train_config=ConfigRecord({"algorithm": cfg.algorithm}), evaluate_fn=evaluate_fn)
    except TooFewClients as err:  # the model holds the last round's arrays (evaluate_fn loaded them)
        log.stop(ledger.round, err)
    else:
        if result.arrays is not None and len(result.arrays):  # empty: no round aggregated (evaluate_fn loaded)
            setup.load_arrays(result.arrays)
    return {"privacy": _privacy_note(cfg)}


def _privacy_note(cfg: FederatedConfig) -> dict:
    note = {"secagg": cfg.secagg, "dp": cfg.dp}
    if cfg.dp == "central":
        note.update(clipping_norm=cfg.dp_clip, noise_multiplier=cfg.dp_noise, mechanism="Flower "
                    "DifferentialPrivacyClientSideFixedClipping + fixedclipping_mod")
    elif cfg.dp == "local":
        note.update(clipping_norm=cfg.dp_clip, epsilon=cfg.dp_epsilon, delta=cfg.dp_delta,
                    mechanism="Flower LocalDpMod (per round, per client)")
    if cfg.secagg:
        note.update(mechanism_secagg="Flower SecAggPlusWorkflow + secaggplus_mod", num_shares=cfg.secagg_shares,
                    reconstruction_threshold=cfg.secagg_threshold, clipping_range=cfg.secagg_clip)
    return note


# -- server: SecAgg+ (Flower's legacy workflow) -----------------------------------------------------


def _run_secagg(grid, cfg, ledger, setup, log, context) -> dict:
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    class SeededManager(SimpleClientManager):
        """Samples clients like the rest of edgeft: seeded, by partition."""

        def sample(self, num_clients, min_num_clients=None, criterion=None):
            self.wait_for(min_num_clients or num_clients)
            by_pid = {ledger.partition_of.get(int(cid)): proxy for cid, proxy in self.clients.items()}
            pids = sorted(p for p in by_pid if p is not None)
            return [by_pid[p] for p in draw_clients(cfg, ledger.round, pids, num_clients)]

    clock = {"t": time.perf_counter()}

    class LegacyFedIt(LegacyFedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            ledger.round, ledger.phase = server_round, "secagg"
            return super().configure_fit(server_round, parameters, client_manager)

        def evaluate(self, server_round, parameters):
            setup.load_arrays(_record(setup, parameters_to_ndarrays(parameters)))
            metrics = log.evaluate(setup, server_round)
            log.end_round(server_round, time.perf_counter() - clock["t"] if server_round else 0.0, metrics)
            clock["t"] = time.perf_counter()
            return (0.0, metrics) if metrics else None

    initial = ndarrays_to_parameters([p.detach().cpu().numpy().copy() for p in setup.params])
    strategy = LegacyFedIt(fraction_fit=1e-9, fraction_evaluate=0.0, min_fit_clients=cfg.clients_per_round,
                           min_available_clients=cfg.clients_per_round, initial_parameters=initial,
                           on_fit_config_fn=lambda rnd: {"server-round": rnd}, accept_failures=True)
    context = LegacyContext(context=context,
                            config=ServerConfig(num_rounds=cfg.rounds, round_timeout=cfg.round_timeout),
                            strategy=strategy, client_manager=SeededManager())
    secagg = SecAggPlusWorkflow(num_shares=_count_or_fraction(cfg.secagg_shares),
                                reconstruction_threshold=_count_or_fraction(cfg.secagg_threshold),
                                max_weight=float(max(len(p) for p in setup.parts)), clipping_range=cfg.secagg_clip,
                                timeout=cfg.round_timeout)
    workflow = DefaultWorkflow(fit_workflow=secagg)
    workflow(grid, context)
    return {"privacy": _privacy_note(cfg), "secagg_rounds": cfg.rounds}


def _count_or_fraction(x: float):
    """SecAgg+ reads ints as counts and floats as fractions of the sampled clients."""
    return int(x) if x > 1 else float(x)

