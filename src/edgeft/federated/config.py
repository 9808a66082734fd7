"""One configuration for a federated run, valid in simulation and in a real SuperLink deployment.

Flower hands a deployed app its settings as a flat `run_config` of scalars (from the app's
pyproject.toml, overridable with `flwr run --run-config`); `to_run_config`/`from_run_config` map this
model to and from that form, so the same ServerApp/ClientApp code serves both runtimes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Optional

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from edgeft.config import SEED_MAX, ConfigFile, drop_retired_key
from edgeft.data.tasks import default_lengths
from edgeft.errors import ConfigError
from edgeft.federated.algorithms import FederatedAlgorithm, get as algorithm_entry
from edgeft.train.precision import PrecisionName


def _registered(name: str) -> str:
    algorithm_entry(name)
    return name


# Keys people bring from centralised fine-tuning (or from Flower's own examples) that mean something else here, or
# whose nearest spelling is an unrelated key ('epochs' was answered "did you mean 'eps'?", MeZO's perturbation
# scale): what to write instead.
MISPLACED_KEYS = {
    **dict.fromkeys(("epochs", "epoch", "num_epochs", "num_train_epochs", "local_epochs", "steps", "max_steps",
                     "train_steps", "num_steps"),
                    "a federated run has no epochs: rounds (--rounds) sets how many rounds run, local_steps "
                    "(--local-steps) how many steps each sampled client takes per round"),
    **dict.fromkeys(("num_rounds", "server_rounds", "num_server_rounds"), "the key is rounds (--rounds)"),
    **dict.fromkeys(("num_clients", "num_supernodes", "num_partitions", "n_clients"),
                    "the key is clients (--clients)"),
    **dict.fromkeys(("sample_clients", "fraction_fit", "fraction_train", "num_clients_per_round"),
                    "the key is clients_per_round (--clients-per-round), a count of clients"),
    **dict.fromkeys(("learning_rate",), "the key is lr (--lr)"),
    **dict.fromkeys(("warmup_steps", "warmup_ratio"), "a federated round has no warm-up; lr_schedule (constant | "
                    "linear, FedIT) shapes the step size within a round, round_lr (FedKSeed) over the rounds"),
    **dict.fromkeys(("eval_steps", "eval_interval", "evaluate_every"),
                    "the key is eval_every (--eval-every), in rounds"),
    **dict.fromkeys(("r", "rank", "lora_r", "lora_rank", "lora_alpha", "target_modules", "lora_dropout"),
                    "LoRA's options go under method_options (e.g. method_options: {r: 8}; --option r=8)"),
    **dict.fromkeys(("method",), "the key is algorithm (fedit | fedkseed | fedkseed-pro | fwdgrad); the tuned "
                    "parameter set of FedKSeed/fwdgrad is zo_base"),
    **dict.fromkeys(("seeds", "k_seeds", "num_candidates"), "FedKSeed's candidate seeds are num_seeds (--num-seeds); "
                    "seed is the run's random seed"),
    **dict.fromkeys(("zo_eps", "mezo_eps", "epsilon"), "MeZO's perturbation scale is eps (--eps); local DP's "
                    "epsilon is dp_epsilon"),
    **dict.fromkeys(("data_file", "train_file", "dataset"), "your own data file is the task itself (task: FILE; "
                    "--data-file FILE); how to read it goes under task_options"),
    **dict.fromkeys(("dev_file", "text_column", "text2_column", "label_column", "instruction_column", "input_column",
                     "response_column", "prompt_template", "label_words", "kind", "task_kind", "dev_fraction"),
                    "how to read your own data file goes under task_options (e.g. task_options: {text_column: "
                    "body}; the --data-file options)"),
    **dict.fromkeys(("dev_samples",), "the server's held-out rows are eval_samples (--eval-samples)"),
}


class FederatedConfig(ConfigFile):
    # --lr inf trained a NaN model to the end without a word, and --alpha inf was told to raise alpha
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    what: ClassVar[str] = "federated config"

    algorithm: Annotated[str, AfterValidator(_registered)]  # a name in edgeft.federated.algorithms
    model: str = "smollm2-135m"
    task: str = "dolly"
    task_options: dict = Field(default_factory=dict, description="how to read a data file of your own: TaskConfig's "
                               "keys (dev_file, kind, text_column, text2_column, label_column, instruction_column, "
                               "input_column, response_column, dev_fraction), as `edgeft finetune` takes them")
    head: Literal["auto", "lm", "classifier"] = "auto"
    max_length: Optional[int] = Field(None, ge=16, description="tokens a row is cut to (default: the task's: 384 "
                                      "for GSM8K, 128 for others)")
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
    seed: int = Field(0, ge=0, le=SEED_MAX, description="the run's random seed (numpy takes 0 to 2**32-1)")

    # local work
    local_steps: int = Field(10, ge=1, description="local steps per round (FedIT, FedKSeed)")
    batch_size: int = Field(4, ge=1)
    lr: Optional[float] = Field(None, gt=0)
    lr_schedule: Literal["constant", "linear"] = "constant"
    round_lr: Literal["constant", "cosine"] = Field("constant", description="how FedKSeed's step size moves over "
                                                   "rounds: cosine takes round r's local steps at lr * (1 + cos(pi "
                                                   "(r-1) / rounds)) / 2; the seed pool stays exact (see fedkseed)")
    weight_decay: float = Field(0.0, ge=0)
    grad_checkpoint: bool = Field(False, description="FedIT: clients recompute each block's activations in the "
                                  "backward instead of keeping them (far less memory on a phone, about one more "
                                  "forward; edgeft.train.recompute)")
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
    max_new_tokens: Optional[int] = Field(None, ge=1, description="tokens generated to score each answer of a "
                                          "generation task (default: the task's: 256 for GSM8K, 64 for others)")
    round_timeout: float = Field(900.0, gt=0, description="seconds the server waits for replies each round")
    dropout: float = Field(0.0, ge=0, lt=1, description="emulate devices failing mid-round with this probability")
    threads: int = Field(0, ge=0, description="torch threads per client process (0: leave as is)")
    precision: PrecisionName = Field("auto", description="clients' forwards: fp32 | tf32 | bf16 | fp16 | auto (fp32)")
    out: str = "runs/federate"

    @model_validator(mode="before")
    @classmethod
    def _no_fd_step(cls, data):
        """fd_step ('h of the central difference') was sent to the clients and read by none: their directional
        derivatives are exact jvps (methods.fwdgrad), so fd_step 1.0 and 1e-9 trained alike. A run's config written
        then holds its default, still read (and dropped); another value is refused."""
        return drop_retired_key(data, "fd_step", 0.01, "fwdgrad's clients take exact directional derivatives "
                                "(torch.func.jvp), so there is no finite-difference step")

    @model_validator(mode="after")
    def _check(self) -> "FederatedConfig":
        max_length, new_tokens = default_lengths(self.task)
        self.max_length = self.max_length or max_length
        self.max_new_tokens = self.max_new_tokens or new_tokens
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
        if self.grad_checkpoint and alg.zeroth_order:
            raise ValueError("grad_checkpoint recomputes activations for a backward; the zeroth-order algorithms "
                             "(fedkseed, fedkseed-pro, fwdgrad) take none. It is for fedit")
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
        from edgeft.config import format_problems, validate
        from edgeft.data import TaskConfig

        if isinstance(data, dict):  # keys whose nearest spelling would point somewhere wrong: say what they are
            misplaced = [f"{key}: unknown key; {MISPLACED_KEYS[key]}" for key in data
                         if key not in cls.model_fields and key in MISPLACED_KEYS]
            if misplaced:
                raise ConfigError(format_problems(source, misplaced, cls.what))
        cfg = validate(cls, data, source, cls.what, cls.keys_hint)
        task = validate(TaskConfig, {"name": cfg.task, **cfg.task_options}, source, cls.what, at=("task_options",))
        _check_task(task, source)
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


def _check_task(task, source: str) -> None:
    """A task that cannot load, refused when the config is read (not when the data loads, after the run's progress
    started): a bundled task given task_options that read a file of your own (the rule of data.tasks'
    load_task, said with this config's keys: its own names a finetune config's task.data_file), or a name that is
    neither a bundled task nor a data file."""
    from edgeft.data.tasks import ALIASES, BUILTIN, TASK_NAMES, own_data_keys_given

    if task.data_file is not None:
        return
    if ALIASES.get(task.name.lower(), task.name.lower()) in BUILTIN:
        names, verb = own_data_keys_given(task)
        if names:
            raise ConfigError(f"{source}: task_options: {names} {verb} for your own "
                              f"data file, and task '{task.name}' is a bundled task with its own prompt, label words, "
                              "columns and dev split. Give your file with --data-file FILE (task: FILE in a config "
                              "file), or leave these out.")
    elif not Path(task.name).suffix:
        raise ConfigError(f"{source}: task: unknown task '{task.name}'. Choose one of {', '.join(TASK_NAMES)}, or "
                          "give a .jsonl/.csv/.tsv file of your own (--data-file FILE; task: FILE in a config file).")


config_from_dict = FederatedConfig.from_dict
