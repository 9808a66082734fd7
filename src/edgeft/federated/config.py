"""One configuration for a federated run, valid in simulation and in a real SuperLink deployment.

Flower hands a deployed app its settings as a flat `run_config` of scalars (from the app's
pyproject.toml, overridable with `flwr run --run-config`); `to_run_config`/`from_run_config` map this
model to and from that form, so the same ServerApp/ClientApp code serves both runtimes.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, ClassVar, Literal, Optional

from pydantic import AfterValidator, Field, model_validator

from edgeft.config import ConfigFile
from edgeft.federated.algorithms import FederatedAlgorithm, get as algorithm_entry
from edgeft.train.precision import PrecisionName


def _registered(name: str) -> str:
    algorithm_entry(name)
    return name


class FederatedConfig(ConfigFile):
    what: ClassVar[str] = "federated config"

    algorithm: Annotated[str, AfterValidator(_registered)]  # a name in edgeft.federated.algorithms
    model: str = "smollm2-135m"
    task: str = "dolly"
    task_options: dict = Field(default_factory=dict, description="how to read a data file of your own: TaskConfig's "
                               "keys (dev_file, kind, text_column, text2_column, label_column, instruction_column, "
                               "input_column, response_column, dev_fraction), as `edgeft finetune` takes them")
    head: Literal["auto", "lm", "classifier"] = "auto"
    max_length: int = Field(128, ge=16)
    train_samples: Optional[int] = Field(None, gt=0, description="training rows drawn (seeded) before partitioning")
    eval_samples: Optional[int] = Field(None, gt=0, description="held-out rows the server evaluates each time")

    # federation and data split
    clients: int = Field(10, ge=1, description="number of clients (data partitions, one per SuperNode)")
    clients_per_round: int = Field(2, ge=1)
    min_clients: Optional[int] = Field(None, ge=1, description="connected clients a round needs; with fewer the run "
                                       "stops early (rounds done are kept). Default: half of clients_per_round, "
                                       "rounded up")
    rounds: int = Field(3, ge=1)
    partition: Literal["iid", "dirichlet", "task"] = "iid"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (smaller = more skewed)")
    holdout_category: Optional[str] = Field(None, description="category kept out of every client (FedKSeed)")
    val_samples: int = Field(0, ge=0, description="training rows the server keeps out of every client to pick the "
                             "round whose global model the run returns, by loss on them (FedKSeed); 0: the last round")
    seed: int = 0

    # local work
    local_steps: int = Field(10, ge=1, description="local steps per round (FedIT, FedKSeed)")
    batch_size: int = Field(4, ge=1)
    lr: Optional[float] = Field(None, gt=0)
    lr_schedule: Literal["constant", "linear"] = "constant"
    round_lr: Literal["constant", "cosine"] = Field("constant", description="how FedKSeed's step size moves over "
                                                   "rounds: cosine takes round r's local steps at lr * (1 + cos(pi "
                                                   "(r-1) / rounds)) / 2; the seed pool stays exact (see fedkseed)")
    weight_decay: float = Field(0.0, ge=0)
    method_options: dict = Field(default_factory=dict, description="options of the LoRA adapter (FedIT) or of "
                                                                     "the tuned parameter set (zeroth-order)")
    zo_base: str = Field("lora", description="parameter set FedKSeed/FwdLLM tune: lora, bitfit, full, ...")
    zo_params: Optional[list[str]] = Field(None, description="perturb only those of zo_base's parameters whose name "
                                                             "contains one of these, e.g. [norm] with zo_base=full "
                                                             "(RMSNorm weights) or [lora_B] with lora")

    # FedKSeed
    num_seeds: int = Field(4096, ge=1, le=65535, description="K, candidate seeds")
    eps: float = Field(1e-2, gt=0, description="MeZO perturbation scale")
    max_loss_diff: Optional[float] = Field(None, gt=0)
    pro_clip: float = Field(1000.0, gt=0, description="FedKSeed-Pro clips scalar gradients to this for the history")

    # FwdLLM
    perturbations: int = Field(8, ge=2, description="forward gradients per client per request")
    candidates: int = Field(10, ge=1)
    fd_step: float = Field(0.01, gt=0, description="h of the central difference")
    var_threshold: float = Field(0.5, gt=0, description="server asks for more perturbations while the noise share of "
                                 "the pooled estimate (FwdLLM's halves check, scale-free: ~0 when the halves agree, "
                                 "~1 for pure noise) is above this")
    max_extra_requests: int = Field(2, ge=0)

    # privacy (FedIT)
    secagg: bool = False
    secagg_shares: float = Field(1.0, gt=0, description="SecAgg+ shares: a fraction of the sampled clients, or a count")
    secagg_threshold: float = Field(0.5, gt=0, description="SecAgg+ reconstruction threshold (fraction or count)")
    secagg_clip: float = Field(8.0, gt=0, description="SecAgg+ clipping range of the quantised values")
    dp: Literal["none", "central", "local"] = "none"
    dp_clip: float = Field(1.0, gt=0, description="L2 clipping norm of each client's update")
    dp_noise: float = Field(0.1, ge=0, description="central DP: noise multiplier (server adds it)")
    dp_epsilon: float = Field(10.0, gt=0, description="local DP: epsilon of the client's Gaussian mechanism")
    dp_delta: float = Field(1e-5, gt=0, lt=1)

    # evaluation, time limits, failures
    evaluate: bool = Field(True, description="evaluate the global model on the server (off for cost benchmarks)")
    eval_every: int = Field(1, ge=1)
    eval_batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(48, ge=1)
    round_timeout: float = Field(900.0, gt=0, description="seconds the server waits for replies each round")
    dropout: float = Field(0.0, ge=0, lt=1, description="emulate devices failing mid-round with this probability")
    threads: int = Field(0, ge=0, description="torch threads per client process (0: leave as is)")
    precision: PrecisionName = Field("auto", description="clients' forwards: fp32 | tf32 | bf16 | fp16 | auto (fp32)")
    out: str = "runs/federate"

    @model_validator(mode="after")
    def _check(self) -> "FederatedConfig":
        owned = {"name", "train_samples", "dev_samples", "max_length", "seed", "data_file"} & set(self.task_options)
        if owned:
            raise ValueError(f"task_options: {sorted(owned)} are set by the run's own keys (task, train_samples, "
                             "eval_samples, max_length, seed)")
        if self.clients_per_round > self.clients:
            given = "" if "clients_per_round" in self.model_fields_set else ", its default"
            raise ValueError(f"clients_per_round ({self.clients_per_round}{given}) exceeds clients ({self.clients}): "
                             f"set --clients-per-round (clients_per_round) to {self.clients} or fewer, or raise "
                             "--clients")
        if self.min_clients is not None and self.min_clients > self.clients_per_round:
            raise ValueError(f"min_clients ({self.min_clients}) exceeds clients_per_round ({self.clients_per_round}): "
                             "a round never samples more than clients_per_round")
        alg = self.entry
        if alg.replays_seeds:
            # Clients rebuild the model from w0 by replaying sum(lr * g_j * z_j): that equals the trained
            # model only if every step used the same lr and nothing else moved the weights.
            if self.lr_schedule != "constant":
                raise ValueError("FedKSeed replays (seed, scalar) pairs: it needs lr_schedule=constant")
            if self.weight_decay != 0:
                raise ValueError("FedKSeed replays (seed, scalar) pairs: it needs weight_decay=0")
        if self.zo_params is not None and (not alg.zeroth_order or not self.zo_params):
            raise ValueError("zo_params selects what zeroth-order algorithms perturb (fedkseed, fedkseed-pro, "
                             "fwdgrad) and needs at least one name; FedIT trains its LoRA adapters")
        if alg.zeroth_order and (self.secagg or self.dp != "none"):
            raise ValueError("secure aggregation and differential privacy are offered for fedit only "
                             "(they act on model arrays; FedKSeed sends scalars, FwdLLM gradients)")
        if self.secagg and self.dp == "central":
            raise ValueError("secagg with central DP is not offered: use dp=local with secagg, or central DP alone")
        if self.round_lr != "constant" and not alg.replays_seeds:
            raise ValueError("round_lr (a step size that decays over rounds) is offered for fedkseed and "
                             "fedkseed-pro; FedIT takes lr_schedule within a round")
        if self.val_samples and not alg.replays_seeds:
            raise ValueError("val_samples (picking the returned round on validation rows) is offered for fedkseed "
                             "and fedkseed-pro; set val_samples=0")
        if self.secagg and self.clients_per_round < 3:
            raise ValueError("SecAgg+ needs at least 3 clients per round")
        return self

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "FederatedConfig":
        """The config, with task_options read as TaskConfig keys: checked here rather than in _check, which does
        not know the source, so a problem there names the file (or "command line") as every other key's does."""
        from edgeft.config import validate
        from edgeft.data import TaskConfig

        cfg = validate(cls, data, source, cls.what, cls.keys_hint)
        validate(TaskConfig, {"name": cfg.task, **cfg.task_options}, source, cls.what, at=("task_options",))
        return cfg

    @property
    def required_clients(self) -> int:
        """Connected clients a round needs (min_clients, default ceil(clients_per_round / 2))."""
        return self.min_clients if self.min_clients is not None else -(-self.clients_per_round // 2)

    @property
    def entry(self) -> FederatedAlgorithm:
        """The registered algorithm (edgeft.federated.algorithms)."""
        return algorithm_entry(self.algorithm)

    def method(self):
        """The method a client trains with: LoRA itself (FedIT), or the zeroth-order wrapper around zo_base with
        method_options as the base's options. A bad option or base is a ConfigError."""
        from edgeft.methods import get_method

        alg = self.entry
        if not alg.zeroth_order:
            return get_method(alg.method, self.method_options)
        return get_method(alg.method, {"base": self.zo_base, "base_options": self.method_options,
                                       "lr": self.learning_rate, "seed": self.seed})

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.entry.default_lr

    def round_learning_rate(self, rnd: int) -> float:
        """The step size of round `rnd` (1-based): lr throughout, or lr on a cosine over the run's rounds that
        starts at lr and is near 0 in the last round (never 0: the last round still moves the model)."""
        if self.round_lr == "constant":
            return self.learning_rate
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * (rnd - 1) / self.rounds))

    # -- Flower run_config (flat scalars) -------------------------------------------------------
    def to_run_config(self) -> dict:
        out = {}
        for key, value in self.model_dump().items():
            if value is None:
                continue
            out[key.replace("_", "-")] = json.dumps(value) if isinstance(value, (dict, list)) else value
        return out

    @classmethod
    def from_run_config(cls, run_config: dict) -> "FederatedConfig":
        data = {}
        for key, value in dict(run_config).items():
            name = key.replace("-", "_")
            if name in ("method_options", "task_options") and isinstance(value, str):
                value = json.loads(value or "{}")
            if name == "zo_params" and isinstance(value, str):
                value = json.loads(value)
            data[name] = value
        return config_from_dict(data, "run_config")


config_from_dict = FederatedConfig.from_dict
