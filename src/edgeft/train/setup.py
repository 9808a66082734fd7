"""The one place a training session is built: task + backbone (with the head the task needs) + featurizer
+ method, and the model the method prepares.

`edgeft finetune` and `edgeft eval`, every runtime strategy, the runtime's calibration and the federated
clients all build through here, so the same inputs give the same model everywhere (the same seed draws
the same random numbers in the same order: seed, task, backbone, featurizer, method, prepare).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import ConfigError
from edgeft.methods import get_method
from edgeft.methods.base import Method
from edgeft.models import load_backbone
from edgeft.models.backbone import family_of, load_config
from edgeft.train.loop import seed_everything


HEADS = ("auto", "lm", "classifier")  # what --head (a config's `head`) accepts


def check_head(head: str) -> str:
    """`head` when it is one of HEADS, else a ConfigError naming them (a typo would otherwise mean auto)."""
    if head not in HEADS:
        raise ConfigError(f"--head {head!r}: must be one of {', '.join(HEADS)}.")
    return head


def head_for(model_name: str, task, head: str) -> str:
    """Which head the backbone gets: a classifier for encoders and regression, else the LM head."""
    check_head(head)
    if head == "lm":
        return "causal_lm"
    if head == "classifier":
        return "sequence_classification"
    if task.kind in ("generation", "lm"):
        return "causal_lm"
    family = family_of(load_config(model_name))
    if family == "bert" or task.kind == "regression":
        return "sequence_classification"
    return "causal_lm"


def backbone_for(model_name: str, task, head_kind: str, num_labels: int | None = None):
    """The backbone with head `head_kind` sized for the task (a regression task: one output, MSE loss)."""
    return load_backbone(model_name, head=head_kind, num_labels=num_labels or task.num_labels,
                         problem_type="regression" if task.kind == "regression" else None)


def position_limit(arch, config) -> int | None:
    """How many positions an encoder's learned position table gives an input (RoBERTa's start after its pad id);
    None for a rotary (Llama) model, which has no table to run past. `config`: the model's transformers config, or
    its config.json as a dict (launch reads only that)."""
    if arch.family != "bert":
        return None
    read = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    roberta = read("model_type", "") in ("roberta", "xlm-roberta")
    pad = read("pad_token_id", None)
    return arch.max_positions - ((1 if pad is None else pad) + 1 if roberta else 0)


def check_max_length(backbone, max_length: int, where: str = " (or task.max_length in a config file)") -> None:
    """--max-length beyond an encoder's positions: a long row stopped the run mid-epoch with a RuntimeError about
    tensor sizes (802 vs 512) from inside BERT's embeddings."""
    check_positions(backbone.name, backbone.arch, backbone.model.config, max_length, where)


def check_positions(name: str, arch, config, max_length: int, where: str) -> None:
    limit = position_limit(arch, config)
    if limit is not None and max_length > limit:
        raise ConfigError(f"--max-length {max_length}{where}: {name} has {limit} positions, so an input "
                          f"longer than that cannot be read; give --max-length {limit} or less.")


@dataclass
class Session:
    """Everything a run trains with; `model` is set by prepare()."""

    task: object
    head: str  # the backbone's head kind ('causal_lm' or 'sequence_classification')
    backbone: object
    featurizer: Featurizer
    method: Method
    model: nn.Module | None = None

    def prepare(self) -> nn.Module:
        """The model to train: the backbone as the method adapts it (draws the method's initial weights)."""
        self.model = self.method.prepare(self.backbone, self.task)
        return self.model


def open_session(model_name: str, task, method: Method | str, method_options: dict | None = None,
                 head: str = "auto", max_length: int = 128) -> Session:
    """A session on an already loaded task (the federated runs partition theirs first)."""
    head_kind = head_for(model_name, task, head)
    backbone = backbone_for(model_name, task, head_kind)
    featurizer = Featurizer(task, backbone.tokenizer, objective_for(task, head_kind), max_length)
    if isinstance(method, str):
        method = get_method(method, method_options)
    return Session(task, head_kind, backbone, featurizer, method)


def start_session(model_name: str, task: TaskConfig | dict, method: str, method_options: dict | None = None,
                  head: str = "auto", seed: int = 0) -> Session:
    """Seed every generator, load the task, open the session: what finetune and every strategy do first."""
    seed_everything(seed)
    tcfg = task if isinstance(task, TaskConfig) else TaskConfig(**task)
    return open_session(model_name, load_task(tcfg), method, method_options, head, tcfg.max_length)
