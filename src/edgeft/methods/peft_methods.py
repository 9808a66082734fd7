"""LoRA and prompt tuning through Hugging Face PEFT, saved in PEFT's own format."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator
from torch import nn

from edgeft.errors import ConfigError, ModelError
from edgeft.methods.base import (ADAPTER_FIX, BlockCost, Method, MethodOptions, check_adapter_weights, damaged_adapter,
                                 read_adapter_json, register_method)

# Attention projections for Llama; for BERT also every dense layer (attention output, FFN, pooler):
# on SST-2 with MiniLM this lifted dev accuracy from 0.775 to 0.817 at the same budget (docs/benchmarks.md).
LORA_TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "bert": ["query", "key", "value", "dense"]}


def lora_shapes(arch, targets: tuple[str, ...] = ()) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of one block that LoRA wraps, by PEFT module name (a BERT
    'dense' matches the attention output, intermediate and output layers). () = query and value,
    PEFT's default for both families; edgeft's lora method passes its own list (LORA_TARGETS)."""
    h, q, kv, inter = arch.hidden_size, arch.q_dim, arch.kv_dim, arch.intermediate_size
    if arch.family == "llama":
        table = {"q_proj": [(h, q)], "k_proj": [(h, kv)], "v_proj": [(h, kv)], "o_proj": [(q, h)],
                 "gate_proj": [(h, inter)], "up_proj": [(h, inter)], "down_proj": [(inter, h)]}
        default = ("q_proj", "v_proj")
    else:
        table = {"query": [(h, h)], "key": [(h, h)], "value": [(h, kv)], "dense": [(h, h), (h, inter), (inter, h)]}
        default = ("query", "value")
    unknown = [t for t in targets if t not in table]
    if unknown:
        raise ConfigError(f"LoRA targets {unknown} are not {arch.family} block layers the cost model knows: {sorted(table)}")
    return [shape for t in (targets or default) for shape in table[t]]


def lora_params(arch, rank: int, targets: tuple[str, ...] = ()) -> int:
    """LoRA's A (in x r) and B (r x out) for every wrapped layer of one block."""
    return sum(rank * (i + o) for i, o in lora_shapes(arch, targets))


# The files PEFT's save_pretrained writes into an adapter folder (older PEFT wrote the weights as a torch pickle).
PEFT_CONFIG, PEFT_WEIGHTS, PEFT_PICKLE = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"


def check_peft_adapter_folder(adapter_dir: Path) -> None:
    """A ModelError naming the file when a PEFT adapter folder lacks its config or weights or holds them damaged:
    PEFT itself would read a missing file as a Hugging Face Hub repository's and go online for it (or fail with a raw
    JSON or safetensors error). Checks the weights' header, not their tensors."""
    d = Path(adapter_dir)
    read_adapter_json(d, PEFT_CONFIG)
    if (d / PEFT_WEIGHTS).is_file() or not (d / PEFT_PICKLE).is_file():
        check_adapter_weights(d, PEFT_WEIGHTS)


def load_peft_adapter(model, adapter_dir: Path, is_trainable: bool = False):
    """PeftModel.from_pretrained on a local adapter folder only (never the Hub): its files checked first, and what
    PEFT still fails to read (weights that do not fit this model) a ModelError naming the folder."""
    from peft import PeftModel

    check_peft_adapter_folder(adapter_dir)
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable, local_files_only=True)
    except (ValueError, RuntimeError, KeyError, TypeError, OSError) as err:
        raise ModelError(f"{adapter_dir}: the PEFT adapter ({PEFT_CONFIG}, {PEFT_WEIGHTS}) does not load into this "
                         f"model ({type(err).__name__}: {err}). {ADAPTER_FIX}") from err
    except Exception as err:  # SafetensorError and the like: a file damaged past what the checks above read
        raise damaged_adapter(adapter_dir, PEFT_WEIGHTS, f"cannot be loaded ({type(err).__name__}: {err})") from err


def _task_type(backbone):
    from peft import TaskType

    return TaskType.CAUSAL_LM if backbone.head == "causal_lm" else TaskType.SEQ_CLS


def linear_names(model) -> list[str]:
    """The distinct last names of a model's linear layers (q_proj, dense, ...): what target_modules can name."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})


def check_targets(method: str, targets: list[str], backbone) -> None:
    """A ConfigError for an empty target list (it fell back to the default targets) or a name matching no module
    (PEFT wraps the names that match and drops a misspelt one without a word), naming the linear layers there are."""
    names = [n for n, _ in backbone.model.named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if targets and not unmatched:
        return
    what = f"{unmatched} match no module" if targets else "[] (an empty list) names no module"
    raise ConfigError(f"{method}: target_modules {what} of {backbone.name}; its linear layers are named "
                      f"{', '.join(linear_names(backbone.model))}, or leave target_modules out for "
                      f"{LORA_TARGETS[backbone.arch.family]}")


class _PeftMethod(Method):
    def peft_config(self, backbone, task):
        raise NotImplementedError

    def prepare(self, backbone, task):
        from peft import get_peft_model

        config = self.peft_config(backbone, task)
        try:
            return get_peft_model(backbone.model, config)
        except ValueError as err:  # PEFT's NoMatchingPeftModuleError and kin: name the modules there are
            if "target" not in str(err).lower():
                raise
            names = linear_names(backbone.model)
            given = sorted(getattr(config, "target_modules", None) or [])
            inner = [n for n in names if n not in ("classifier", "score", "lm_head", "dense_head")] or names
            raise ConfigError(f"{self.name}: target_modules {given} match no module of {backbone.name}; its linear "
                              f"layers are named {', '.join(names)} (e.g. --option "
                              f"'target_modules=[{', '.join(inner[-2:])}]')") from None

    def save(self, model, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir))

    def load(self, backbone, task, adapter_dir: Path):
        return load_peft_adapter(backbone.model, adapter_dir, is_trainable=True)


class LoraOptions(MethodOptions):
    r: int = Field(8, ge=1, description="rank of each update")
    alpha: int = Field(16, ge=1, description="scale: the update is multiplied by alpha / r")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the input of each low-rank update")
    target_modules: Optional[list[str]] = Field(
        None, description="linear layers to wrap, by name (q_proj, dense, ...); None: q/k/v/o_proj on Llama, "
                          "query/key/value/dense on BERT")
    layers: Optional[list[int]] = Field(None, description="block indices (0 = nearest the input) that get LoRA; "
                                                            "None: every block. The others stay frozen as they are")


@register_method
class LoRA(_PeftMethod):
    """Low-rank updates beside the attention/MLP weights (PEFT's LoRA); mergeable into the model."""

    name = "lora"
    default_lr = 1e-3
    Options = LoraOptions
    priced_as = "lora"
    supports_blockwise = True

    @classmethod
    def block_cost(cls, arch, workload, dense):
        """The frozen block plus the adapters' own matmuls (forward, input and weight gradients) and
        their low-rank intermediates."""
        targets = tuple(workload.lora_targets)
        trainable = lora_params(arch, workload.lora_rank, targets)
        lora_f = 2.0 * dense.tokens * trainable
        bwd_in = dense.bwd_input + lora_f
        saved = dense.act_saved + dense.tokens * len(lora_shapes(arch, targets)) * workload.lora_rank * dense.dtype_bytes
        return BlockCost(trainable=trainable, fwd=dense.fwd + lora_f, bwd_pass=bwd_in, bwd_train=bwd_in + lora_f,
                         act_saved=saved)

    def cost_workload(self, arch) -> dict:
        """The layers this method really wraps (they size the uploads and broadcasts) at its rank."""
        o = self.options
        if o.layers is not None:
            raise ConfigError("LoRA option 'layers' (LoRA on some blocks only) is not priced by the planner, which "
                              "costs every block alike: leave 'layers' out for a planned or collaborative run")
        return {"method": "lora", "lora_rank": int(o.r),
                "lora_targets": tuple(o.target_modules or LORA_TARGETS[arch.family])}

    def peft_config(self, backbone, task):
        from peft import LoraConfig

        o = self.options
        layers = None
        if o.layers is not None:
            n = backbone.arch.num_layers
            wrong = sorted({i for i in o.layers if not 0 <= i < n})
            if not o.layers or wrong:
                raise ConfigError(f"LoRA option 'layers': {wrong or 'an empty list'} — give block indices from 0 to "
                                  f"{n - 1} ({backbone.arch.family} backbone with {n} blocks), or leave it out")
            layers = sorted(set(o.layers))
        if o.target_modules is not None:
            check_targets(self.name, o.target_modules, backbone)
        return LoraConfig(task_type=_task_type(backbone), r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout,
                          target_modules=o.target_modules or LORA_TARGETS[backbone.arch.family],
                          layers_to_transform=layers)


INIT_TEXT = "Classify the text and answer with the right label."


class PromptOptions(MethodOptions):
    num_virtual_tokens: int = Field(20, ge=1, description="learned embeddings before every input (on an encoder they "
                                                          "take positions too: with max_length at most its table's)")
    init: Literal["text", "random"] = Field("text", description="text: start from init_text's token embeddings")
    init_text: str = Field(INIT_TEXT, description="the text whose token embeddings start the prompt (init=text)")

    @model_validator(mode="before")
    @classmethod
    def _init_text_needs_text_init(cls, data):
        """init_text given with init=random was dropped without a word: the prompt started random. (An adapter's
        note holds every option, the default init_text too: that one is not refused.)"""
        if isinstance(data, dict) and data.get("init_text", INIT_TEXT) != INIT_TEXT and data.get("init") == "random":
            raise ValueError("init_text: acts only with init=text (the default); with init=random the prompt starts "
                             "from random embeddings. Drop one of them")
        return data


@register_method
class PromptTuning(_PeftMethod):
    """Learned virtual-token embeddings before every input (PEFT's prompt tuning); the backbone stays frozen."""

    name = "prompt"
    default_lr = 3e-2
    Options = PromptOptions

    @classmethod
    def blockwise_problem(cls) -> str:
        return "it prepends virtual tokens inside PEFT's forward, which block-wise execution bypasses"

    def check_positions(self, backbone, task) -> None:
        """An encoder (BERT) has max_positions position embeddings, and the virtual tokens take positions before the
        input: beyond them it failed deep in the model's embeddings (a RuntimeError traceback) at the first batch."""
        max_length = task.config.max_length if getattr(task, "config", None) is not None else None
        n, limit = self.options.num_virtual_tokens, backbone.arch.max_positions
        if backbone.arch.family != "bert" or max_length is None or n + max_length <= limit:
            return
        fixes = ([f"num_virtual_tokens={limit - max_length} or less"] if limit > max_length else []) + \
            ([f"--max-length {limit - n} or less"] if limit - n >= 8 else [])  # TaskConfig's least max_length
        raise ConfigError(f"prompt: num_virtual_tokens={n} + --max-length {max_length} = {n + max_length} positions, "
                          f"but {backbone.name} has {limit} (an encoder's position embeddings end there); use "
                          f"{' or '.join(fixes) or 'another backbone'}")

    def prepare(self, backbone, task):
        self.check_positions(backbone, task)
        return super().prepare(backbone, task)

    def peft_config(self, backbone, task):
        from peft import PromptTuningConfig, PromptTuningInit

        o = self.options
        kwargs = {}
        if o.init == "text":
            kwargs = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": o.init_text,
                      "tokenizer_name_or_path": backbone.path}
        return PromptTuningConfig(task_type=_task_type(backbone), num_virtual_tokens=o.num_virtual_tokens, **kwargs)

    def load(self, backbone, task, adapter_dir: Path):
        # PEFT refuses to load a prompt-learning adapter as trainable; a loaded one is evaluated, never trained on
        self.check_positions(backbone, task)
        return load_peft_adapter(backbone.model, adapter_dir)
