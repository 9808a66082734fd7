"""The compression steps `edgeft compress --method` offers, each with validated options.

Every step changes `source.backbone.model` in place and records in the manifest what the folder
writer must know (which layers are packed, which are sparse). Steps chain through saved folders:
structured pruning and distillation need dense weights, so they come before sparsity/quantisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeft.compress.distill import DistillOptions
from edgeft.compress.embedding_gptq import quantize_tied_embedding, tied_embedding
from edgeft.compress.gptq import gptq_by_row_groups
from edgeft.compress.guidance import output_gradient_weights
from edgeft.compress.layerwise import block_linear_names, compress_layerwise
from edgeft.models.modules import set_module
from edgeft.compress.norm_tweak import NormLoss, NormTweak
from edgeft.compress.prune import apply_structured, magnitude_mask, plan_structured
from edgeft.compress.qlinear import QuantLinear
from edgeft.compress.quantizer import QuantGrid, check_bits, check_group_size, rtn_quantize
from edgeft.compress.sparsegpt import sparsegpt_prune
from edgeft.config import validate
from edgeft.errors import ConfigError


class StepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class StepContext:
    """What the pipeline hands every step: the task's calibration batches (for steps that need them)."""

    task: str | dict  # a task name, or a user's own data as an adapter's note records it (data.tasks.task_config)
    batches: list[dict] | None = None
    seed: int = 0


def parse_pattern(pattern: Optional[str]) -> tuple[int, int]:
    """'2:4' -> (2, 4); None -> (0, 0) (unstructured)."""
    if not pattern:
        return 0, 0
    try:
        n, m = (int(x) for x in pattern.split(":"))
    except ValueError as err:
        raise ConfigError(f"pattern '{pattern}': expected N:M such as 2:4.") from err
    if not 0 < n < m:
        raise ConfigError(f"pattern '{pattern}': need 0 < N < M (N of every M weights are pruned).")
    return n, m


class Step:
    name: ClassVar[str]
    Options: ClassVar[type[StepOptions]] = StepOptions
    needs_calibration: ClassVar[bool] = False

    def label(self, o) -> str:
        return self.name

    def check_input(self, source) -> None:
        """Refuse inputs this step cannot work on (already packed, already sparse, ...)."""

    def resolve(self, source, o):
        """Options whose default depends on the model, made concrete (the same options by default)."""
        return o

    def apply(self, source, ctx, o, progress=None) -> dict:
        raise NotImplementedError


def _dense_only(source, step: str) -> None:
    if source.manifest.quantized:
        raise ConfigError(f"{step}: the input is already quantised ({source.manifest.quantized.get('method')}); "
                          f"run {step} on the unquantised model and quantise last.")


STEPS: dict[str, type[Step]] = {}


def register(cls):
    STEPS[cls.name] = cls
    return cls


def get_step(name: str, options: dict | None = None):
    if name not in STEPS:
        raise ConfigError(f"unknown compression method '{name}'. Choose one of: {', '.join(sorted(STEPS))}.")
    step = STEPS[name]()
    return step, validate(step.Options, options or {}, f"method '{name}' options", "compression options",
                          "`edgeft compress --help` and docs/compress.md list them")


@register
class Merge(Step):
    """Only merge the adapter (if any) and store: the deployable fine-tuned model."""

    name = "merge"

    def label(self, o):
        return "merged (no compression)"

    def apply(self, source, ctx, o, progress=None):
        return {}


class QuantOptions(StepOptions):
    bits: int = 4
    # group 32, symmetric: the codes are exactly ggml's Q4_0 blocks (4.5 bits/weight), so `edgeft export` writes
    # them as they are and llama.cpp runs them 4-bit; asymmetric g32 is Q4_1 (5.0), g128 fits no ggml block
    # (docs/benchmarks_compress.md, "GPTQ against llama.cpp's quantisers")
    group_size: int = 32
    sym: bool = True
    mse: bool = False  # search a clipped range per group (the reference Quantizer's mse option)

    @field_validator("bits")
    @classmethod
    def _packable(cls, bits: int) -> int:  # refused when the options are read, before the model loads
        return check_bits(bits)

    @field_validator("group_size")
    @classmethod
    def _group(cls, group_size: int) -> int:
        return check_group_size(group_size)


def _swap_quantized(model, name: str, lin, codes, scales, zeros, bits: int, group_size: int) -> None:
    set_module(model, name, QuantLinear.from_codes(lin, codes, scales, zeros, bits, group_size))


class _Quantize(Step):
    def check_input(self, source):
        _dense_only(source, self.name)
        if source.manifest.sparse:
            raise ConfigError(f"{self.name}: the input is sparse; quantising it would store the pruned zeros as "
                              "dense codes (joint sparse+quantised storage is not implemented). Quantise the "
                              "dense model, or keep the sparse one unquantised.")

    def _record(self, source, names, o, extra):
        source.manifest.quantized = {"method": self.name, "bits": o.bits, "group_size": o.group_size, "sym": o.sym,
                                     "mse": o.mse, "modules": names, **extra}


@register
class RTN(_Quantize):
    """Round-to-nearest onto the same grid GPTQ uses: the baseline that shows what GPTQ adds."""

    name = "rtn"
    Options = QuantOptions

    def label(self, o):
        return f"RTN {o.bits}-bit g{o.group_size}" + (" mse" if o.mse else "")

    def apply(self, source, ctx, o, progress=None):
        model, view = source.backbone.model, source.backbone.view
        names = block_linear_names(model, view)
        grid = QuantGrid(o.bits, o.sym, o.mse)
        for name in names:
            lin = model.get_submodule(name)
            codes, s, z = rtn_quantize(lin.weight.detach(), grid, o.group_size)
            _swap_quantized(model, name, lin, codes, s, z, o.bits, o.group_size)
        self._record(source, names, o, {})
        return {"layers": len(names)}


class GPTQOptions(QuantOptions):
    # act-order is the default: on SmolLM2-135M (4-bit g128) it cut the perplexity increase from +23% to +10%
    # (docs/benchmarks_compress.md); GPTQModel also defaults to it (desc_act)
    act_order: bool = True
    true_sequential: bool = False
    percdamp: float = Field(0.01, gt=0)
    blocksize: int = Field(128, ge=1)
    # guided: each calibration token's share of a layer's Hessian is weighted by the squared end-loss gradient
    # at the layer's output (edgeft.compress.guidance). None: on for causal LMs (it needs their loss), off
    # otherwise. On SmolLM2-135M 4-bit g128 it cut the perplexity increase by a quarter (docs/benchmarks_compress.md)
    guided: Optional[bool] = None
    # guided only: contiguous groups of output rows, each quantised with its own guided Hessian (GuidedQuant's
    # channel groups); 4 had the lowest perplexity on held-out validation text (docs/benchmarks_compress.md)
    channel_groups: int = Field(4, ge=1)
    # norm tweaking (edgeft.compress.norm_tweak): after each block is quantised, Adam steps on its norm weights
    # towards the float block's outputs on the same inputs. None: on for causal LMs, off otherwise (measured
    # only there). lr, epochs and loss were chosen on held-out WikiText-2 validation windows: output MSE beat
    # the paper's channel-distribution loss on SmolLM2-135M (docs/benchmarks_compress.md)
    norm_tweak: Optional[bool] = None
    norm_tweak_lr: float = Field(1e-4, gt=0)
    norm_tweak_epochs: int = Field(1, ge=1)
    norm_tweak_loss: NormLoss = "mse"
    # embedding: GPTQ the tied token embedding too, as the output layer (edgeft.compress.embedding_gptq), so a
    # GGUF export is 4-bit throughout. None: on when the output layer shares the embedding's weight
    embedding: Optional[bool] = None


@register
class GPTQ(_Quantize):
    name = "gptq"
    Options = GPTQOptions
    needs_calibration = True

    def label(self, o):
        return (f"GPTQ {o.bits}-bit g{o.group_size}" + (" act-order" if o.act_order else "") + (" mse" if o.mse else "")
                + (" guided" if o.guided else "") + (" norm-tweaked" if o.norm_tweak else "")
                + (" +embedding" if o.embedding else ""))

    def resolve(self, source, o):
        """guided=None becomes on for a causal LM, off for other heads (guidance uses the LM loss);
        norm_tweak=None likewise (measured on a causal LM only)."""
        causal = source.backbone.head == "causal_lm"
        if o.guided is None:
            o = o.model_copy(update={"guided": causal})
        if o.norm_tweak is None:
            o = o.model_copy(update={"norm_tweak": causal})
        tied = causal and tied_embedding(source.backbone.model) is not None
        if o.embedding is None:
            o = o.model_copy(update={"embedding": tied})
        elif o.embedding and not tied:
            raise ConfigError("gptq option embedding=true: this model's output layer does not share the input "
                              "embedding's weight (or it is not a causal LM); leave the option out.")
        return o

    def apply(self, source, ctx, o, progress=None):
        model = source.backbone.model
        grid = QuantGrid(o.bits, o.sym, o.mse)
        packed = {}

        def fn(name, lin, H):
            res = gptq_by_row_groups(lin.weight, H, grid, o.group_size, o.blocksize, o.percdamp, o.act_order)
            # the float weight becomes exactly the dequantised codes; layers are packed once every block
            # is done, so the calibration passes run plain matmuls instead of unpacking codes each time
            lin.weight.data.copy_(res.weight.to(lin.weight.dtype))
            packed[name] = (lin, res.codes, res.scales, res.zeros)
            return {"loss": res.loss}

        weights = output_gradient_weights(source.backbone, ctx.batches, channel_groups=o.channel_groups) \
            if o.guided else None
        tweak = NormTweak(o.norm_tweak_lr, o.norm_tweak_epochs, o.norm_tweak_loss, seed=ctx.seed) \
            if o.norm_tweak else None
        stats = compress_layerwise(source.backbone, ctx.batches, fn, o.true_sequential, progress=progress,
                                   token_weights=weights, block_hook=tweak)
        info = {"layers": len(stats), "gptq_loss_sum": sum(s["loss"] for s in stats.values())}
        if o.embedding:  # before packing: the Hessian pass then runs plain matmuls
            info["embedding"] = quantize_tied_embedding(model, ctx.batches, grid, o.group_size, o.percdamp,
                                                        o.act_order)
        for name, (lin, codes, scales, zeros) in packed.items():
            _swap_quantized(model, name, lin, codes, scales, zeros, o.bits, o.group_size)
        self._record(source, list(stats), o, {"act_order": o.act_order, "percdamp": o.percdamp, "guided": o.guided,
                                              "norm_tweak": o.norm_tweak, "embedding": o.embedding})
        if tweak:
            info["norm_tweak"] = {str(i): s for i, s in tweak.stats.items()}
        return info


class SparsityOptions(StepOptions):
    sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    pattern: Optional[str] = None  # "2:4": N of every M consecutive input weights pruned (overrides sparsity)

    @field_validator("pattern")
    @classmethod
    def _n_of_m(cls, pattern: Optional[str]) -> Optional[str]:  # refused when the options are read
        parse_pattern(pattern)
        return pattern

    @model_validator(mode="after")
    def _one_amount(self):
        """A pattern sets the amount (N/M); a different sparsity given beside it would be dropped silently."""
        if self.pattern and "sparsity" in self.model_fields_set:
            n, m = parse_pattern(self.pattern)
            if abs(self.sparsity - n / m) > 1e-9:
                raise ValueError(f"sparsity {self.sparsity:g} and pattern {self.pattern} disagree: the pattern "
                                 f"removes {n}/{m} = {n / m:g} of the weights; give one of them")
        return self


def _sparse_label(kind: str, o) -> str:
    return f"{kind} {o.pattern}" if o.pattern else f"{kind} {round(o.sparsity * 100)}%"


class _Sparsify(Step):
    def check_input(self, source):
        _dense_only(source, self.name)

    def resolve(self, source, o):
        """An N:M pattern the layers' widths do not fit is refused before the input is measured and calibrated."""
        n, m = parse_pattern(o.pattern)
        model = source.backbone.model
        for name in block_linear_names(model, source.backbone.view) if n else []:
            width = model.get_submodule(name).in_features
            if width % m:
                raise ConfigError(f"{self.name} pattern {o.pattern}: {name} has {width} inputs, not a multiple of "
                                  f"{m}; choose an M that divides the layers' widths (2:4 is the usual one).")
        return o


@register
class Magnitude(_Sparsify):
    name = "magnitude"
    Options = SparsityOptions

    def label(self, o):
        return _sparse_label("magnitude", o)

    def apply(self, source, ctx, o, progress=None):
        n, m = parse_pattern(o.pattern)
        model, view = source.backbone.model, source.backbone.view
        names = block_linear_names(model, view)
        for name in names:
            w = model.get_submodule(name).weight
            w.data[magnitude_mask(w, o.sparsity, n, m)] = 0.0
        source.manifest.sparse = sorted(set(source.manifest.sparse) | set(names))
        return {"layers": len(names)}


class SparseGPTOptions(SparsityOptions):
    true_sequential: bool = False
    percdamp: float = Field(0.01, gt=0)
    blocksize: int = Field(128, ge=1)


@register
class SparseGPT(_Sparsify):
    name = "sparsegpt"
    Options = SparseGPTOptions
    needs_calibration = True

    def label(self, o):
        return _sparse_label("SparseGPT", o)

    def apply(self, source, ctx, o, progress=None):
        n, m = parse_pattern(o.pattern)

        def fn(name, lin, H):
            if n and lin.in_features % m:
                raise ConfigError(f"{name}: input width {lin.in_features} is not a multiple of {m} ({o.pattern}).")
            res = sparsegpt_prune(lin.weight, H, o.sparsity, n, m, o.blocksize, o.percdamp)
            lin.weight.data.copy_(res.weight.to(lin.weight.dtype))
            return {"loss": res.loss}

        stats = compress_layerwise(source.backbone, ctx.batches, fn, o.true_sequential, progress=progress)
        source.manifest.sparse = sorted(set(source.manifest.sparse) | set(stats))
        return {"layers": len(stats), "sparsegpt_loss_sum": sum(s["loss"] for s in stats.values())}


class PruneOptions(StepOptions):
    ratio: float = Field(0.2, ge=0.0, lt=1.0)
    importance: Literal["param_first", "vectorize", "param_second", "param_mix"] = "param_first"
    first_block: Optional[int] = None  # None: skip the first 1/8 of the blocks, as LLM-Pruner does (4 of 32)
    last_block: Optional[int] = None  # exclusive; None: skip the last 1/16 (2 of 32)
    attention: bool = True
    mlp: bool = True
    round_to: int = Field(32, ge=1)  # kept MLP channels rounded to a multiple of this


@register
class Prune(Step):
    """LLM-Pruner-style structured pruning of KV-head groups and MLP channels (Llama family)."""

    name = "prune"
    Options = PruneOptions
    needs_calibration = True

    def label(self, o):
        return f"LLM-Pruner {round(o.ratio * 100)}%"

    def check_input(self, source):
        _dense_only(source, self.name)
        if source.manifest.sparse:
            raise ConfigError("prune: the input is already sparse; prune structurally first, then sparsify.")
        if source.backbone.arch.family != "llama":
            raise ConfigError(f"prune: structured pruning supports Llama-family models, not "
                              f"'{source.backbone.arch.family}'. Use sparsegpt or magnitude instead.")

    def resolve(self, source, o):
        """The block range is checked before the input is measured and the calibration gradients are taken."""
        self.blocks(source.backbone.view.num_blocks, o)
        return o

    def blocks(self, n: int, o) -> range:
        first = o.first_block if o.first_block is not None else round(n * 4 / 32)
        last = o.last_block if o.last_block is not None else n - round(n * 2 / 32)
        if not 0 <= first < last <= n:
            raise ConfigError(f"prune: block range {first}..{last} (options first_block, last_block: exclusive) is "
                              f"not inside 0..{n}, the model's {n} blocks.")
        return range(first, last)

    def apply(self, source, ctx, o, progress=None):
        model = source.backbone.model
        blocks = self.blocks(source.backbone.view.num_blocks, o)
        plan, scores = plan_structured(model, ctx.batches, o.ratio, blocks, o.importance, o.attention, o.mlp, progress,
                                       o.round_to)
        apply_structured(model, plan)
        return {"blocks": [blocks.start, blocks.stop],
                "kv_groups_kept": {i: len(v) for i, v in plan.keep_kv_groups.items()},
                "channels_kept": {i: len(v) for i, v in plan.keep_channels.items()}}


@register
class Distill(Step):
    """GKD from a teacher into this (smaller or pruned) student."""

    name = "distill"
    Options = DistillOptions

    def label(self, o):
        return f"GKD distilled ({o.steps} steps)"

    def check_input(self, source):
        if source.manifest.quantized or source.manifest.sparse:
            raise ConfigError("distill: the student must be dense; distil before sparsifying or quantising.")

    def resolve(self, source, o):
        """A teacher (or its adapter) that is not there is named before the student is measured, not after."""
        from pathlib import Path

        from edgeft.compress.store import is_compressed_folder
        from edgeft.methods.base import read_adapter_note
        from edgeft.models.backbone import resolve

        if not is_compressed_folder(o.teacher):
            resolve(o.teacher)
        if o.teacher_adapter:
            read_adapter_note(Path(o.teacher_adapter))
        return o

    def apply(self, source, ctx, o, progress=None):
        from pathlib import Path

        from edgeft.compress.distill import check_compatible, distill_pairs, gkd
        from edgeft.compress.source import open_model

        teacher = open_model(o.teacher, Path(o.teacher_adapter) if o.teacher_adapter else None)
        if teacher.side_module is not None:
            raise ConfigError("distill: the teacher's adapter cannot be merged into it; use a mergeable method.")
        student = source.backbone
        check_compatible(student.model, teacher.backbone.model, student.tokenizer, teacher.backbone.tokenizer)
        seed = ctx.seed if o.seed is None else o.seed
        pairs = distill_pairs(ctx.task, student.tokenizer, o.pairs, o.prompt_len, o.max_new_tokens, seed)
        res = gkd(student.model, teacher.backbone.model, student.tokenizer, pairs, o.model_copy(update={"seed": seed}),
                  progress)
        return {"teacher": teacher.manifest.source, "losses": res.losses, "on_policy": res.on_policy,
                "step_seconds": res.step_seconds, "task": ctx.task}
