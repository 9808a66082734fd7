"""Model shape numbers the cost model needs, without loading any weights.

The solvers are pure functions of these numbers, so planning never needs torch or a download.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeft.errors import ConfigError


@dataclass(frozen=True)
class ModelArch:
    """Transformer shape: enough to count parameters, FLOPs and activation bytes per block."""

    name: str
    family: str  # 'llama' (gated MLP, RMSNorm, no biases) or 'bert' (GELU MLP, LayerNorm, biases)
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int = 512
    tie_embeddings: bool = True
    type_vocab_size: int = 0
    # A config.json's own `head_dim` where it sets one (Qwen3: 16 heads x 128 on a width of 1024); 0 = hidden / heads.
    # Priced as hidden / heads, Qwen3-0.6B's attention projections were counted at half their size.
    explicit_head_dim: int = 0

    def __post_init__(self) -> None:
        if self.family not in ("llama", "bert"):
            raise ConfigError(f"model {self.name!r}: family must be 'llama' or 'bert', got {self.family!r}")
        for field in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"model {self.name!r}: {field} must be positive")
        if self.explicit_head_dim < 0:
            raise ConfigError(f"model {self.name!r}: head_dim must be positive")
        if not self.explicit_head_dim and self.hidden_size % self.num_heads:
            raise ConfigError(f"model {self.name!r}: hidden_size {self.hidden_size} is not a multiple of num_heads")

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.hidden_size // self.num_heads

    @property
    def q_dim(self) -> int:
        """The width of the queries and of the attention's output (the hidden size unless head_dim is set apart)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ModelArch] = {
    # all-MiniLM-L6-v2 (BERT encoder), numbers from its config.json.
    "minilm-l6": ModelArch("minilm-l6", "bert", 6, 384, 12, 12, 1536, 30522, 512, True, 2),
    # SmolLM2-135M(-Instruct), Llama architecture with grouped-query attention and tied embeddings.
    "smollm2-135m": ModelArch("smollm2-135m", "llama", 30, 576, 9, 3, 1536, 49152, 8192, True, 0),
    # RoBERTa-base, the backbone of the LoLa DEFT experiments.
    "roberta-base": ModelArch("roberta-base", "bert", 12, 768, 12, 12, 3072, 50265, 514, True, 1),
    # The split paper's setting: Upsilon = 32 layers, h = 1024, MHA with a 4h MLP (psi = 72Bdh^2 + 12Bd^2h).
    "llama-7b-paper": ModelArch("llama-7b-paper", "bert", 32, 1024, 8, 8, 4096, 32000, 4096, False, 0),
}


BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra")
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "granite")


def arch_from_hf_config(cfg: dict, name: str) -> ModelArch:
    """Reads a Hugging Face config.json dict (llama/mistral/qwen-like, bert/roberta-like or DistilBERT). A missing,
    non-integer or non-positive field is an error naming it (a planner fed `num_hidden_layers: 4.7` or `null` would
    otherwise price another model, or fail deep inside)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"model config {name}: expected a JSON object (a transformers config.json), found "
                          f"{type(cfg).__name__}")
    mtype = str(cfg.get("model_type", ""))

    def num(key: str, default=None) -> int:
        value = cfg.get(key, default)
        if value is None:
            hint = "" if key in cfg or mtype in BERT_LIKE + LLAMA_LIKE + ("distilbert",) else \
                f" (model_type {mtype!r} is not one edgeft reads: llama-like {', '.join(LLAMA_LIKE)}; " \
                f"bert-like {', '.join(BERT_LIKE)}, distilbert)"
            raise ConfigError(f"model config {name}: missing key {key!r}{hint} (need a transformers config.json)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value <= 0:
            raise ConfigError(f"model config {name}: {key} = {value!r} must be a positive whole number")
        return int(value)

    if mtype == "distilbert":  # its own key names; a BERT block otherwise
        heads = num("n_heads")
        return ModelArch(name, "bert", num("n_layers"), num("dim"), heads, heads, num("hidden_dim"), num("vocab_size"),
                         num("max_position_embeddings", 512), True, 0)
    if mtype in BERT_LIKE:
        heads = num("num_attention_heads")
        return ModelArch(name, "bert", num("num_hidden_layers"), num("hidden_size"), heads, heads,
                         num("intermediate_size"), num("vocab_size"), num("max_position_embeddings", 512), True,
                         int(cfg.get("type_vocab_size") or 0))
    heads = num("num_attention_heads")
    kv = num("num_key_value_heads", heads)
    if heads % kv:
        raise ConfigError(f"model config {name}: num_attention_heads {heads} is not a multiple of "
                          f"num_key_value_heads {kv}")
    hidden = num("hidden_size")
    given = num("head_dim") if cfg.get("head_dim") is not None else 0
    return ModelArch(name, "llama", num("num_hidden_layers"), hidden, heads, kv,
                     num("intermediate_size"), num("vocab_size"), num("max_position_embeddings", 2048),
                     bool(cfg.get("tie_word_embeddings", False)), 0, 0 if given * heads == hidden else given)


def resolve_arch(model: str) -> ModelArch:
    """A preset name, a config.json file, or a directory holding one."""
    if model in PRESETS:
        return PRESETS[model]
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        return arch_from_hf_config(cfg, path.parent.name or str(path))
    raise ConfigError(
        f"unknown model {model!r}: use one of {sorted(PRESETS)} or a path to a transformers config.json / model dir"
    )


def block_params(arch: ModelArch) -> tuple[int, int]:
    """(parameters in one block, of which in matmul weights)."""
    h, q, kv, inter = arch.hidden_size, arch.q_dim, arch.kv_dim, arch.intermediate_size
    if arch.family == "llama":
        mat = h * q + 2 * h * kv + q * h + 3 * h * inter
        return mat + 2 * h, mat
    mat = 4 * h * h + 2 * h * inter
    bias = 4 * h + inter + h
    return mat + bias + 4 * h, mat
