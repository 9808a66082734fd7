"""The registered `pac` method: options, building the PacModel for a backbone + task, save and load."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Literal, Optional, Union

import torch
from pydantic import Field, field_validator, model_validator
from safetensors.torch import save_file
from torch import nn

from edgeft.data.features import objective_for
from edgeft.errors import CacheError, ConfigError, ModelError
from edgeft.methods.base import (ADAPTER_FIX, BlockCost, Method, MethodOptions, check_adapter_weights, damaged_adapter,
                                 read_adapter_json, read_adapter_weights, register_method)
from edgeft.methods.pac.cache import ActivationCache, CacheKey, tokenizer_fingerprint, weights_fingerprint
from edgeft.methods.pac.model import PacModel
from edgeft.methods.pac.side_network import ParallelAdapters, copy_obstacle, prune_blocks
from edgeft.methods.pac.taps import Positions, parse_taps
from edgeft.paths import edgeft_home

WEIGHTS, SPEC = "pac.safetensors", "pac.json"


class PacOptions(MethodOptions):
    # where the cache lives, how its entries are checked and how the fill is chunked: the same training either way
    RUN_ONLY = frozenset({"cache_dir", "verify", "on_stale", "on_corrupt", "offload_backbone", "stream_mb",
                          "stream_batch"})
    # the side network
    # Defaults: the configuration chosen on 1000 held-out SST-2 training examples with SmolLM2-135M
    # (docs/benchmarks_pac.md, runs 2, 3 and 5); train it at lr 5e-4.
    taps: Union[str, int, list[int]] = Field("every:3", description="'all', 'every:K' (or K), or block indices")

    @field_validator("taps")
    @classmethod
    def _taps_read(cls, taps):
        """The spelling is checked when the options are read, not after the first evaluation; block indices are
        checked against the backbone later, when its depth is known."""
        if isinstance(taps, str) and taps != "all":
            items = [taps.split(":", 1)[1]] if taps.startswith("every:") else taps.split(",")
            if not all(i.strip().lstrip("-").isdigit() for i in items):
                parse_taps(taps, 1)  # its error names the accepted spellings
        if isinstance(taps, list) and not taps:
            parse_taps(taps, 1)  # its error says what to give instead
        return taps
    reduction: int = Field(4, ge=1, description="adapter width = hidden size / reduction")
    width: Optional[int] = Field(None, ge=1, description="adapter width (overrides reduction)")
    combine: Literal["gated", "sum", "ladder"] = "gated"
    side_blocks: int = Field(1, ge=0, description="residual MLP blocks after combining the taps")
    heads: int = Field(4, ge=0, description="side attention heads across positions (0: none; needs every "
                                            "token's taps in the cache)")
    side_layers: int = Field(2, ge=1, description="side transformer layers (attention, then side_blocks MLP "
                                                  "blocks), stacked")
    side_init: Literal["auto", "random", "backbone"] = Field(
        "auto", description="random: side layers of width r from scratch; backbone: the side layers are copies of "
                            "the backbone's last side_layers blocks, pruned to width r by weight magnitude (Ladder "
                            "Side-Tuning), fed from the tapped state entering them (that block is tapped too); "
                            "auto: backbone for a sentence-pair classification task (examples with text2, labels "
                            "not scores) on an encoder, random otherwise (single sentences, regression, language "
                            "modelling, any task on a causal LM) and under the multi-device strategies, whose "
                            "pipeline cannot feed copied blocks; a saved adapter records the resolved value "
                            "(docs/benchmarks_pac.md, 'side_init=auto')")
    tap_norm: Literal["token", "channel"] = Field(
        "channel", description="token: each tap LayerNormed per token; channel: then every channel standardised "
                               "with statistics of norm_samples training samples, measured once before the first "
                               "step (the multi-device runtime uses token)")
    out_scale: Literal["auto", "fixed", "stream"] = Field(
        "auto", description="how the side network's correction joins the backbone's final state: fixed = added as "
                            "it is; stream = in units of that state's RMS at each position (a Llama block's output is "
                            "the raw residual stream, RMS ~40 in SmolLM2, where BERT's is ~1); auto = "
                            "PAC.causal_out_scale on a causal LM, PAC.encoder_out_scale on an encoder (chosen on "
                            "held-out training rows, docs/benchmarks_pac.md, 'out_scale')")
    side_attention: Literal["auto", "causal", "bidirectional"] = Field(
        "auto", description="the side layers' own attention across positions: causal (a position sees the ones before "
                            "it) or bidirectional (every real position); auto = bidirectional on an encoder, causal "
                            "for language modelling on a causal LM, PAC.causal_readout_side_attention where a causal "
                            "LM is read at one position (classification, a verbalizer, regression), since no later "
                            "token exists there to leak (docs/benchmarks_pac.md, 'side_attention')")
    norm_samples: int = Field(1024, ge=2, description="tap_norm=channel: training samples the statistics come from")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    pool: Literal["auto", "mean", "first", "last"] = Field(
        "auto", description="encoder/classifier pooling (auto: mean for BERT, last token for Llama)")
    head_norm: Literal["none", "final"] = Field(
        "final", description="task head (classifier/regression): final = it reads the state through the backbone's "
                            "frozen final norm, as the backbone's own classifier does (Llama; BERT's block output "
                            "is normalised already); none = the raw last-block state plus the side output")
    pair_encoding: Literal["auto", "joint", "segments", "siamese"] = Field(
        "auto", description="a sentence pair on an encoder (BERT) with a task head, where the side layers are not "
                            "copies: auto = PAC.encoder_pair_encoding (siamese: chosen on held-out training rows, "
                            "MiniLM-L6); joint = one sequence, the segments attend to each other, the head reads the "
                             "mean over all tokens; segments = the same encoding, the head reads the two segments' "
                             "L2-normalised means u, v as [|u-v|, u*v]; siamese = the frozen backbone encodes each "
                             "segment on its own (attention within the segment, positions restarting, token type 0), "
                             "as a bi-encoder such as all-MiniLM-L6-v2 was trained, and the head reads [|u-v|, u*v]. "
                             "Elsewhere joint (docs/benchmarks_pac.md, 'pair_encoding')")
    # the activation cache
    cache_positions: Literal["auto", "all"] = Field(
        "auto", description="auto: only the positions the side network needs; all: every real token")
    cache: Literal["memory", "disk", "off"] = "memory"
    cache_dir: Optional[str] = Field(None, description="disk cache folder (default: $EDGEFT_HOME/pac-cache/<key>); "
                                                       "giving one without `cache` means cache=disk")

    @model_validator(mode="before")
    @classmethod
    def _cache_dir_means_disk(cls, data):
        """A folder for the cache asks for a disk cache: with the default cache=memory it was ignored, without a word,
        and nothing was kept there for the next run."""
        if isinstance(data, dict) and data.get("cache_dir") is not None and "cache" not in data:
            data = {**data, "cache": "disk"}
        return data
    cache_dtype: Literal["fp32", "fp16", "bf16", "int8"] = "int8"
    cache_budget_mb: Optional[float] = Field(None, gt=0)
    on_budget: Literal["error", "recompute"] = Field("error", description="what a full cache does (with "
                                                       "cache_budget_mb): stop, or run the backbone for the rest")

    @model_validator(mode="before")
    @classmethod
    def _on_budget_needs_a_budget(cls, data):
        """on_budget=recompute without cache_budget_mb was dropped without a word: the cache had no budget to reach."""
        if isinstance(data, dict) and data.get("on_budget", "error") != "error" and data.get("cache_budget_mb") is None:
            raise ValueError("on_budget: acts only with cache_budget_mb (the cache's size limit); give the budget, "
                             "or drop on_budget")
        return data
    on_stale: Literal["error", "rebuild"] = "error"
    on_corrupt: Literal["error", "recompute"] = "error"
    verify: bool = Field(True, description="check every entry's CRC-32 when it is read")
    cache_eval: bool = Field(True, description="cache dev samples too (they are as deterministic as training ones)")
    offload_backbone: bool = Field(True, description="move the backbone's blocks to CPU once a whole training batch "
                                                     "comes from the cache (accelerators only; fill=batch)")
    fill: Literal["stream", "batch"] = Field(
        "stream", description="stream: before epoch 1, run the backbone block by block over the whole training set "
                              "(length-sorted chunks) to fill the cache, with the blocks kept in host memory on an "
                              "accelerator; batch: run it on each training batch that misses the cache")
    stream_mb: float = Field(64.0, gt=0, description="fill=stream: hidden states held per chunk (MB)")
    stream_batch: Optional[int] = Field(
        None, ge=1, description="fill=stream: samples per backbone micro-batch (None: 256 on CUDA, where the fill is "
                                "launch-bound, 64 elsewhere; pac.model.FILL_MICRO_BATCH says why)")
    fill_precision: Literal["run", "tf32", "bf16"] = Field(
        "run", description="fill=stream: the backbone pass that fills the cache, in the run's precision, or (CUDA "
                           "only) with TF32 matrix products or in bf16 autocast: its output is stored as int8 codes "
                           "(8 bits of each value; TF32 products keep 10)")
    # the cached epochs' fast path
    device_cache: Literal["auto", "on", "off"] = Field(
        "auto", description="after the fill, pack the training samples' cache entries on the training device (each "
                            "checked once, then one gather per batch); auto: on CUDA when they fit device_cache_share "
                            "of its free memory; on: on any device (CPU too); off: read the cache every step")
    device_cache_share: float = Field(0.25, gt=0, le=1, description="device_cache=auto: most of the free device "
                                                                     "memory the packed cache may take")
    graphs: bool = Field(True, description="CUDA only, with the device cache: pad cached batches to length buckets "
                                           "and replay each bucket's whole step (forward, loss, backward, clipping; "
                                           "under bf16/fp16 or accumulation its forward+backward) as a CUDA graph")
    graph_bucket: int = Field(16, ge=1, description="graphs: batches are padded to a multiple of this many tokens")


def positions_for(objective: str, family: str, pool: str, every_token: bool) -> tuple[Positions, Positions]:
    """(positions tapped and cached, how a task head pools them). Every token when asked or attended over."""
    if objective == "lm":
        if pool != "auto":
            raise ConfigError(f"pool={pool}: language modelling needs every position; leave pool=auto.")
        return "all", "last"
    if objective == "verbalize":
        if pool not in ("auto", "last"):
            raise ConfigError(f"pool={pool}: a causal LM's verbalizer reads the last token; leave pool=auto.")
        return ("all" if every_token else "last"), "last"
    head_pool = pool if pool != "auto" else ("mean" if family == "bert" else "last")
    return ("all" if every_token else head_pool), head_pool  # type: ignore[return-value]


def backbone_attention(view) -> str:
    """How the backbone itself attends (side_attention's terms): what copied blocks keep and what adapters saved
    before the option had."""
    return "causal" if view.is_causal else "bidirectional"


@register_method
class PAC(Method):
    """Parallel adapters on a frozen backbone, fed from an activation cache after epoch 1."""

    name = "pac"
    # A causal LM (Llama): chosen by the quality suite's rule on held-out training rows of its six tasks
    # (SmolLM2-135M, 3 train seeds): 1e-3 beat run 5's 5e-4 (an SST-2-only choice) by 2.2 points on the mean
    default_lr = 1e-3
    # An encoder (BERT) with a trainable task head: chosen on held-out training rows over all six tasks of the
    # quality suite (MiniLM-L6, 3 train seeds): at 5e-4 the side network is undertrained (STS-B 66 against 75)
    encoder_lr = 2e-3
    # PAC's cached epochs are cheap, so its own budget may spend more of them (issue 15) while it stays >= 5x
    # (CPU) and >= 8.64x (GPU) faster than LoRA end to end. On a causal LM (Llama) the quality suite's rule on
    # held-out training rows chose 6 (SmolLM2-135M, six tasks, 3 train seeds: 61.1 against 58.8 at 3; the same
    # rule over both backbones' 12 cells also chose 6); on an encoder (MiniLM-L6) 3 stayed best (59.9 against
    # 59.0 at 6), so encoders keep TrainConfig's default (bench/results/h4_device/, docs/benchmarks_pac.md).
    # Once the correction joined in the stream's units (out_scale=stream) with side layers from scratch, the same
    # rule chose 10 (SmolLM2-135M: 64.56 against 63.49 at 6; h14 on one H100; PAC stays 16x faster than LoRA's
    # 5 epochs there). bench/quality.py gives PAC this budget too.
    default_epochs = None
    causal_lm_epochs = 10
    # How a sentence pair on an encoder (BERT) with a task head and random side layers is read (pair_encoding=auto):
    # the quality suite's rule on held-out training rows (MiniLM-L6, six tasks, 3 train seeds) chose siamese: the
    # frozen bi-encoder reads each sentence on its own, as it was trained (STS-B 82.0 against 75.2 joint; the other
    # five cells unchanged). Causal LMs (and pair classification, whose side layers are copies) stay joint.
    encoder_pair_encoding = "siamese"
    # How the correction joins the final state (out_scale=auto): the quality suite's rule on held-out training rows
    # chose stream on a causal LM (SmolLM2-135M, six tasks, 3 train seeds: 62.7 against 61.6 for fixed; h12)
    causal_out_scale = "stream"
    encoder_out_scale = "fixed"  # MiniLM-L6: stream 60.05 against fixed 60.75 (h12)
    # side_init=auto on a causal LM's sentence-pair classification: with the correction in the stream's units the
    # same rule chose side layers from scratch over copied blocks (SmolLM2-135M: 63.49 against 62.70; h13)
    causal_pair_side_init = "random"
    # The side attention of a causal LM read at one position (side_attention=auto): causal, as before the option
    # existed; the quality suite's rule kept it (SmolLM2-135M, held-out rows: bidirectional 63.77 against 63.63, below
    # the 0.5 margin; h16, CPU)
    causal_readout_side_attention = "causal"
    Options = PacOptions
    priced_as = "pac"
    supports_blockwise = True
    blockwise_strategies = ("hybrid",)
    trains_backbone = False
    caches_backbone = True
    blockwise: str | None = None  # the block-wise strategy that will run the model (run_blockwise), if any
    process: str | None = None  # the collaborative run's device this process is (run_as), if any

    # -- what the planner and the block-wise runtime ask --------------------------------------------
    @classmethod
    def block_cost(cls, arch, workload, dense):
        """The backbone never runs backward; an adapter of width adapter_rank does, beside each block."""
        h, r = arch.hidden_size, workload.adapter_rank
        ad_f = 2.0 * dense.tokens * (2 * h * r)
        fwd = dense.fwd + ad_f
        return BlockCost(trainable=2 * h * r + r + h, fwd=fwd, bwd_pass=0.0 * fwd, bwd_train=2.0 * ad_f,
                         act_saved=dense.tokens * (h + r * 2) * dense.dtype_bytes)  # the adapter's own activations

    def cost_workload(self, arch) -> dict:
        return {"method": "pac", "adapter_rank": self.width(arch.hidden_size)}

    def width(self, hidden: int) -> int:
        return self.options.width or max(8, hidden // self.options.reduction)

    def trainable_layout(self, arch, task_kind: str, num_labels: int) -> tuple[list[float], float]:
        """Each tap's down-projection on its block, the rest of the side network on the last block."""
        side = side_params(self.options, arch, task_kind, num_labels)
        trainable = [0.0] * arch.num_layers
        for t in side["taps"]:
            trainable[t] = float(side["per_tap"])
        trainable[-1] += side["total"] - sum(trainable)
        return trainable, float(side["total"])

    def uses_cache(self) -> bool:
        return self.options.cache != "off"

    @classmethod
    def strategy_problem(cls, strategy: str) -> str:
        return ("its side network reads taps from every block while the backbone runs forward only, which the hybrid "
                f"pipeline does (runtime/strategies/pac_bridge.py); {strategy} trains the blocks by backprop where "
                "they run")

    def run_blockwise(self, strategy: str) -> None:
        """The block-wise strategies run PAC through pac_bridge, which cannot feed copied side blocks the
        backbone's block inputs: side_init=auto resolves to random there (explicit backbone still errors)."""
        self.blockwise = strategy

    def run_as(self, process: str) -> None:
        """Each device of a collaborative run caches its own rows: with cache=disk, in its own subfolder of the
        cache folder (one folder shared by several processes would be refused: stores.DiskStore)."""
        self.process = re.sub(r"[^A-Za-z0-9_.-]", "_", process)  # a device name as one folder name

    def side_init_for(self, task, num_blocks: int, family: str, hidden: int) -> tuple[str, str]:
        """(side_init this run uses, why). auto: on an encoder, copies of the backbone's last blocks for sentence-pair
        classification, where the two segments must be compared token by token (pretrained attention does that,
        attention learned from scratch on a small training set overfits); random side layers elsewhere, where the
        pooled embedding carries the answer, and on a causal LM (causal_pair_side_init; docs/benchmarks_pac.md)."""
        o = self.options
        if o.side_init != "auto":
            return o.side_init, "given"
        if not (task.kind == "classification" and getattr(task, "is_pair", False)):
            return "random", "auto: not a sentence-pair classification task"
        if family == "llama" and self.causal_pair_side_init == "random":
            return "random", "auto: a sentence-pair classification task on a causal LM (PAC.causal_pair_side_init)"
        width = o.width or max(8, hidden // o.reduction)
        if self.blockwise:
            blocked = (f"the {self.blockwise} strategy runs PAC stage by stage and cannot feed copied side blocks "
                       "the backbone's block inputs")
        else:
            blocked = copy_obstacle(family, width, hidden, num_blocks, o.side_layers)
        if blocked:
            why = f"auto: a sentence-pair classification task, but side_init=backbone cannot apply: {blocked}"
            print(f"note: pac side_init=auto -> random ({why})", file=sys.stderr)
            return "random", why
        return "backbone", "auto: a sentence-pair classification task"

    def pair_encoding_for(self, task, backbone, side_init: str) -> str:
        """The pair_encoding option (auto: encoder_pair_encoding) where it applies (a sentence pair on a BERT backbone
        with a task head, and side layers that are not copies of the backbone's blocks, which attend across the joint
        sequence), else joint. Under the block-wise strategies always joint: they run the backbone stage by stage
        and pool the task head's input themselves (runtime/strategies/hybrid.py)."""
        o = self.options
        applies = (getattr(task, "is_pair", False) and backbone.arch.family == "bert" and not self.blockwise
                   and backbone.head == "sequence_classification" and side_init == "random")
        if not applies:
            return "joint"
        return self.encoder_pair_encoding if o.pair_encoding == "auto" else o.pair_encoding

    @classmethod
    def default_epochs_for(cls, family: str | None) -> int | None:
        """causal_lm_epochs on a Llama-family backbone; elsewhere default_epochs (None: TrainConfig's)."""
        return cls.causal_lm_epochs if family == "llama" else cls.default_epochs

    def lr_for(self, model: nn.Module | None = None) -> float:
        """encoder_lr for a PAC model on a BERT backbone, default_lr otherwise (docs/benchmarks_pac.md)."""
        return self.encoder_lr if getattr(model, "family", None) == "bert" else self.default_lr

    def fills_cache_first(self, strategy: str) -> bool:
        """Hybrid fills the cache with a forward-only pipeline pass first when tap_norm=channel (the default),
        whose statistics must be measured before training (runtime/strategies/hybrid.py says how)."""
        return strategy == "hybrid" and self.uses_cache() and self.options.tap_norm == "channel"

    @classmethod
    def timing_options(cls, options: dict, cached: bool) -> dict:
        """The backbone pass is timed without the cache, the cached step with an in-memory one."""
        return {**options, "cache": "memory" if cached else "off"}

    def out_scale_for(self, family: str) -> str:
        """The out_scale option, auto resolved per backbone family (causal_out_scale on Llama)."""
        if self.options.out_scale != "auto":
            return self.options.out_scale
        return self.causal_out_scale if family == "llama" else self.encoder_out_scale

    def side_attention_for(self, objective: str, is_causal: bool) -> str:
        """The side_attention option resolved: bidirectional on an encoder; on a causal LM causal for language
        modelling (a position may not see the tokens it predicts) and causal_readout_side_attention where the model
        is read at one position, after the whole input."""
        given = self.options.side_attention
        if is_causal and objective == "lm":
            if given == "bidirectional":
                raise ConfigError("side_attention=bidirectional: this task trains a language model, whose positions "
                                  "must not see the tokens they predict; use causal or auto.")
            return "causal"
        if given != "auto":
            return given
        return self.causal_readout_side_attention if is_causal else "bidirectional"

    def prepare(self, backbone, task, side_init: str | None = None, pair_encoding: str | None = None,
                out_scale: str | None = None, side_attention: str | None = None) -> PacModel:
        """The PAC model for this backbone and task. side_init, pair_encoding, out_scale, side_attention: the resolved
        values to build with (load passes the saved ones); None resolves the options (side_init_for,
        pair_encoding_for, out_scale_for, side_attention_for)."""
        o = self.options
        objective = objective_for(task, backbone.head)
        view = backbone.view
        taps = parse_taps(o.taps, view.num_blocks)
        hidden = backbone.arch.hidden_size
        width = o.width or max(8, hidden // o.reduction)
        if side_init is None:
            side_init, why = self.side_init_for(task, view.num_blocks, backbone.arch.family, hidden)
        else:
            why = "the saved adapter's"
        pair = pair_encoding or self.pair_encoding_for(task, backbone, side_init)
        positions, head_pool = positions_for(objective, backbone.arch.family, o.pool,
                                             o.heads > 0 or o.cache_positions == "all" or pair != "joint")
        copies = {}
        if side_init == "backbone":
            obstacle = copy_obstacle(backbone.arch.family, width, hidden, view.num_blocks, o.side_layers)
            if obstacle:
                raise ConfigError(f"side_init=backbone: {obstacle}.")
            entry = view.num_blocks - o.side_layers - 1  # the block whose output enters the first copied block
            taps = tuple(sorted(set(taps) | {entry}))
            layers, channels = prune_blocks(list(view.blocks)[entry + 1:], backbone.arch.family, width)
            copies = dict(copies=layers, channels=channels, entry_tap=taps.index(entry))
        elif o.heads and width % o.heads:
            raise ConfigError(f"heads={o.heads}: the side width {width} must be a multiple of the number of heads.")
        attention = side_attention or self.side_attention_for(objective, view.is_causal)
        if side_init == "backbone":  # copied blocks keep the backbone's own attention
            attention = backbone_attention(view)
            if o.side_attention not in ("auto", attention):
                raise ConfigError(f"side_attention={o.side_attention}: side_init=backbone copies the backbone's "
                                  f"blocks, which attend as the backbone does ({attention}); leave side_attention=auto "
                                  "or use side_init=random.")
        side = ParallelAdapters(hidden, len(taps), width, combine=o.combine, dropout=o.dropout,
                                side_blocks=o.side_blocks, heads=o.heads, causal=attention == "causal",
                                layers=o.side_layers, tap_norm=o.tap_norm,
                                out_scale=out_scale or self.out_scale_for(backbone.arch.family), **copies)
        head = None
        if backbone.head == "sequence_classification":  # a pair read as segments: [|u-v|, u*v] (2 x hidden)
            head = nn.Sequential(nn.Dropout(o.dropout), nn.Linear(hidden * (1 if pair == "joint" else 2),
                                                                  task.num_labels))
        cache = None
        if o.cache != "off":
            max_length = task.config.max_length if getattr(task, "config", None) is not None else None
            key = CacheKey(backbone=backbone.identity, tokenizer=tokenizer_fingerprint(backbone.tokenizer),
                           weights=weights_fingerprint(view, taps), taps=taps,
                           max_length=max_length, positions=positions, hidden=hidden, dtype=o.cache_dtype,
                           encoding="siamese" if pair == "siamese" else "joint")
            directory = None
            if o.cache == "disk":
                directory = Path(o.cache_dir).expanduser() if o.cache_dir else edgeft_home() / "pac-cache" / key.fingerprint
                if self.process:
                    directory = directory / self.process
            cache = ActivationCache(key, storage=o.cache, directory=directory, budget_mb=o.cache_budget_mb,
                                    on_budget=o.on_budget, on_stale=o.on_stale, on_corrupt=o.on_corrupt,
                                    verify=o.verify)
        model = PacModel(backbone.model, backbone.arch.family, taps, positions, side, task_head=head, cache=cache,
                         cache_dtype=o.cache_dtype, cache_eval=o.cache_eval, offload_backbone=o.offload_backbone,
                         fill=o.fill, stream_mb=o.stream_mb, stream_batch=o.stream_batch,
                         fill_precision=o.fill_precision,
                         head_pool=head_pool, head_norm=o.head_norm, pair_encoding=pair)
        model.backbone_identity = backbone.identity
        model.side_init_why = why
        return model

    def place(self, model: PacModel, device) -> PacModel:
        """On an accelerator with a cache and fill=stream, the backbone's blocks stay in host memory."""
        device = torch.device(device)
        if self.options.fill == "stream" and model.cache is not None and device.type != "cpu":
            return model.keep_backbone_on_host(device)
        return model.to(device)

    def on_epoch_start(self, model: PacModel, epoch: int, feats: list[dict], collate, resumed: bool = False) -> None:
        """fill=stream fills the cache before the first epoch, and before the first of a resumed run (a new process
        starts with an empty cache; its steps then read the same stored taps as the uninterrupted run's). The
        channel statistics are measured once, before the first epoch; a resumed run gets them from the checkpoint
        (`checkpoint_state`), or measures them where an older checkpoint lacks them."""
        o = self.options
        with model.timed("fill_s"):
            if o.fill == "stream" and (epoch == 0 or resumed):
                model.fill_cache(feats, collate)
        with model.timed("pack_s"):
            if model.cache is not None:  # once the cache holds every sample (stream: before epoch 1; batch: after it)
                model.pack_device_cache(feats, o.device_cache, o.device_cache_share, o.graphs, o.graph_bucket)
        with model.timed("tap_stats_s"):
            if (epoch == 0 and not resumed) or (resumed and not model.side.has_tap_stats()):
                model.fit_tap_stats(feats, collate, o.norm_samples)  # reads the packed cache when there is one

    def checkpoint_state(self, model: PacModel) -> dict[str, torch.Tensor]:
        """The side network's and task head's buffers: the channel statistics measured before the first epoch."""
        parts = {"side": model.side, "task_head": model.task_head}
        return {f"{part}.{name}": buf for part, module in parts.items() if module is not None
                for name, buf in module.named_buffers()}

    def load_checkpoint_state(self, model: PacModel, state: dict[str, torch.Tensor]) -> None:
        own = self.checkpoint_state(model)
        unknown = [name for name in state if name not in own]
        if unknown:
            raise CacheError(f"checkpoint: PAC state '{unknown[0]}' does not belong to this side network "
                             "(other PAC options?); resume with the run's own settings or delete the checkpoint.")
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value)

    def graphed_step(self, model: PacModel, batch: dict, loss_fn, params: list, max_grad_norm: float | None):
        """A cached step from the device view as one CUDA graph (options graphs and device_cache)."""
        return model.graphed_train_step(batch, loss_fn, params, max_grad_norm)

    def spec(self, model: PacModel) -> dict:
        side = model.side
        return {"taps": list(model.taps), "positions": model.positions, "hidden": side.hidden,
                "width": side.width, "combine": side.combine, "side_blocks": len(side.blocks),
                "side_layers": len(side.copies) if side.copies is not None else 1 + len(side.more),
                "side_init": "random" if side.copies is None else "backbone", "tap_norm": side.tap_norm,
                "out_scale": side.out_scale, "side_attention": "causal" if side.causal else "bidirectional",
                "heads": model.side.heads, "head_pool": model.head_pool,
                "task_head": model.task_head is not None, "head_norm": model.head_norm,
                "pair_encoding": model.pair_encoding}

    def save(self, model: PacModel, out_dir: Path) -> None:
        """pac.safetensors (side network + task head) and pac.json (its shape and the backbone it belongs to)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.adapter_state().items()}, str(out / WEIGHTS))
        spec = {**self.spec(model), "backbone_identity": getattr(model, "backbone_identity", None),
                "side_init_option": self.options.side_init, "side_init_why": getattr(model, "side_init_why", None)}
        (out / SPEC).write_text(json.dumps(spec, indent=2))

    def load(self, backbone, task, adapter_dir: Path) -> PacModel:
        d = Path(adapter_dir)
        if not (d / WEIGHTS).is_file() and not (d / SPEC).is_file():
            raise ModelError(f"{d}: not a PAC adapter folder (needs {WEIGHTS} and {SPEC}). {ADAPTER_FIX}")
        saved = read_adapter_json(d, SPEC)  # each a ModelError naming the file when it is missing or damaged
        check_adapter_weights(d, WEIGHTS)
        saved.setdefault("side_layers", 1)  # adapters saved before these options existed had one random-init layer
        saved.setdefault("side_init", "random")
        saved.setdefault("tap_norm", "token")
        saved.setdefault("out_scale", "fixed")  # saved before the option existed: the correction was added as it is
        # saved before side_attention existed: the side layers attended as the backbone does
        saved.setdefault("side_attention", backbone_attention(backbone.view))
        old_head = "head_norm" not in saved  # saved before head_norm existed: its task head read the raw state
        saved.setdefault("head_norm", "none")
        saved.setdefault("pair_encoding", "joint")  # saved before the option existed
        if saved.get("backbone_identity") and saved["backbone_identity"] != backbone.identity:
            raise ModelError(f"{d}: this PAC adapter belongs to backbone {saved['backbone_identity']}, not to "
                             f"{backbone.identity}. Load it with the backbone it was trained on.")
        # auto (side_init, pair_encoding, out_scale, side_attention) rebuilds what was saved (its resolved value); an
        # explicit value must match it
        o = self.options
        model = self.prepare(backbone, task, saved["side_init"] if o.side_init == "auto" else None,
                             saved["pair_encoding"] if o.pair_encoding == "auto" else None,
                             saved["out_scale"] if o.out_scale == "auto" else None,
                             saved["side_attention"] if o.side_attention == "auto" else None)
        if old_head:
            model.head_norm = "none"
        now = self.spec(model)
        diff = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in now.items() if saved.get(k) != v]
        if diff:
            raise ModelError(f"{d}: this PAC adapter does not fit the backbone/task/options it is loaded with "
                             f"({'; '.join(diff)}).")
        state = read_adapter_weights(d, WEIGHTS)
        side = {k[len("side."):]: v for k, v in state.items() if k.startswith("side.")}
        try:
            model.side.load_state_dict(side, strict=True)
            if model.task_head is not None:
                model.task_head.load_state_dict({k[len("task_head."):]: v for k, v in state.items()
                                                 if k.startswith("task_head.")}, strict=True)
        except RuntimeError as err:  # tensors missing, unexpected or of another shape than pac.json describes
            raise damaged_adapter(d, WEIGHTS, f"does not hold the side network {SPEC} describes ({err})") from err
        return model


def side_params(o: PacOptions, arch, task_kind: str = "auto", num_labels: int = 2) -> dict:
    """PAC's trainable parameters from its own options (width or reduction, taps, side layers, heads,
    side blocks, combine): the side network built on torch's meta device, so nothing is allocated.
    side_init=backbone copies the last side_layers blocks pruned to the side width; each copy is
    counted as a block of the backbone scaled by (width / hidden)^2 (both sides of its matrices are cut).
    side_init=auto is priced as random: the planner prices only the block-wise strategies (deft, split,
    hybrid), under which auto always resolves to random (PAC.run_blockwise)."""
    from edgeft.models.arch import block_params

    h, L = arch.hidden_size, arch.num_layers
    width = o.width or max(8, h // o.reduction)
    taps = set(parse_taps(o.taps, L))
    copied = o.side_init == "backbone"
    if copied:
        taps.add(L - o.side_layers - 1)
    with torch.device("meta"):
        side = ParallelAdapters(h, len(taps), width, combine=o.combine, side_blocks=o.side_blocks,
                                heads=0 if copied else o.heads, layers=1 if copied else o.side_layers,
                                tap_norm=o.tap_norm)
    total = sum(p.numel() for p in side.parameters())
    if copied:
        total += width + o.side_layers * round(block_params(arch)[0] * (width / h) ** 2)  # gain + the copies
    kind = task_kind if task_kind != "auto" else ("causal_lm" if arch.family == "llama" else "classification")
    if kind != "causal_lm":
        total += h * num_labels + num_labels  # the trainable task head
    return {"width": width, "taps": sorted(taps), "per_tap": h * width + width, "total": total}
