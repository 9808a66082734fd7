"""Analytic cost per transformer block: FLOPs, memory and bytes to send.

This module counts the frozen block (DenseBlock); each method adds its own work (Method.block_cost,
in edgeft.methods), so a new method brings its cost model with it.

Every solver reads a `CostTable` (per-layer arrays), so the same solver works on analytic counts or
on a measured profile (`planner.profile.profile_to_table`), where measured time x the profiling machine's
matmul rate stands in for FLOPs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from edgeft.errors import ConfigError
from edgeft.models.arch import ModelArch, block_params



def _method_class(name: str):
    """The registered method (imported here, not at module level: the planner alone needs no torch)."""
    from edgeft.methods import METHODS

    return METHODS.get(name)


@dataclass(frozen=True)
class Workload:
    """One training step's shape and the method's knobs."""

    batch: int = 8
    seq_len: int = 128
    method: str = "lora"
    dtype_bytes: int = 4  # fp32 on CPU edge devices
    grad_sync_bytes: int = 4  # bytes per gradient element in the data-parallel all-reduce (runtime's grad_sync)
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ()  # PEFT module names LoRA wraps; () = PEFT's default (query, value)
    adapter_rank: int = 64  # PAC parallel-adapter width
    task_kind: str = "auto"  # 'causal_lm' | 'classification' | 'auto' (llama -> causal_lm, bert -> classification)
    num_labels: int = 2
    attention: str = "sdpa"  # 'sdpa' keeps no seq x seq matrix for backward; 'eager' does
    optimizer_states: int = 2  # Adam: two fp32 moments per trainable parameter

    def __post_init__(self) -> None:
        cls = _method_class(self.method)
        if cls is None or not cls.has_cost_model():
            from edgeft.methods.base import costed_methods

            raise ConfigError(f"method {self.method!r} has no cost model; choose one of {costed_methods()}")
        if self.batch <= 0 or self.seq_len <= 0:
            raise ConfigError("batch and seq_len must be positive")
        if self.attention not in ("sdpa", "eager"):
            raise ConfigError("attention must be 'sdpa' or 'eager'")

    @property
    def trains_backbone(self) -> bool:
        """Whether backward runs through the blocks (the method says: Method.trains_backbone)."""
        return _method_class(self.method).trains_backbone

    @property
    def caches_backbone(self) -> bool:
        """Whether later epochs train on cached backbone activations (the method says: Method.caches_backbone)."""
        return _method_class(self.method).caches_backbone

    def kind_for(self, arch: ModelArch) -> str:
        if self.task_kind != "auto":
            return self.task_kind
        return "causal_lm" if arch.family == "llama" else "classification"


def ring_allreduce_s(nbytes: float, n: int, bps: float, latency_s: float = 0.0) -> float:
    """Ring all-reduce of nbytes among n peers: 2(n-1) steps of nbytes/n through the slowest link
    (bps), each also paying latency_s. The runtime's links do the same (emulation.LinkModel)."""
    if n < 2 or nbytes <= 0:
        return 0.0
    if bps <= 0:  # a device with no uplink (rate_mbps: 0) cannot take part in one
        return math.inf
    return 2 * (n - 1) * (nbytes / n * 8 / bps + latency_s)


def _saved_elems_per_token(arch: ModelArch, seq: int, attention: str) -> float:
    """Elements autograd keeps per token of one block for its backward (our count of HF's modules)."""
    h, q, kv, inter, heads = arch.hidden_size, arch.q_dim, arch.kv_dim, arch.intermediate_size, arch.num_heads
    if arch.family == "llama":
        norms = 2 * (3 * h)  # RMSNorm keeps its input, the fp32 copy and the normalised output
        attn_io = h + q + kv + kv + q  # q/k/v input, q, k, v, o_proj input
        mlp = 4 * inter + h  # gate, up, silu out, product; attention output residual
        extra = heads * seq if attention == "eager" else heads
        return norms + attn_io + mlp + extra
    # bert: LayerNorm inputs, dropout masks (1 byte, counted as 1/4 element), GELU MLP
    attn_io = h + 3 * h + h  # qkv input, q, k, v, context
    probs = (2 * heads * seq + heads * seq / 4) if attention == "eager" else heads
    norms = 2 * h
    mlp = h + 2 * inter
    masks = 2 * h / 4
    return attn_io + probs + norms + mlp + masks


@dataclass
class CostTable:
    """Per-layer costs for one (arch, workload); indices 0..L-1 from the input side.

    FLOPs are for one step on `batch` x `seq_len` tokens. `bwd_pass` is the input-gradient backward
    of a frozen layer that backprop crosses; `bwd_train` the backward of a layer whose own weights
    (or adapters) train. Memory is in bytes.
    """

    arch: ModelArch
    workload: Workload
    params: np.ndarray
    trainable: np.ndarray
    fwd: np.ndarray
    bwd_pass: np.ndarray
    bwd_train: np.ndarray
    act_saved: np.ndarray  # bytes autograd keeps when backward crosses the layer
    embed_params: int
    head_params: int
    embed_fwd: float
    head_fwd: float
    head_bwd: float
    head_saved: float  # bytes kept by the head (logits) when a backward starts there
    boundary_bytes: float  # the hidden state between two layers (what a pipeline or split sends)
    source: str = "analytic"
    notes: dict = field(default_factory=dict)
    # Measured on the machine that runs the plan (runtime calibration); 0 = not measured, analytic only.
    step_fixed_s: float = 0.0  # per optimizer step, outside the FLOPs above: collate, norm, optimizer update
    cached_step_flops: float = 0.0  # PAC, per sample: a step on the activation cache (lookup, decode, adapters)
    cached_call_flops: float = 0.0  # PAC, per device and step with any cached rows: the part that does not scale
    trainable_total: float = 0.0  # every trainable parameter of the built model (head included)
    # The embedding's trainable parameters (all of it under full fine-tuning): split's devices train and all-reduce
    # them with their blocks, and deft sends them with the first block; `trainable` counts blocks only.
    embed_trainable: float = 0.0
    cached_rows_flops: tuple = ()  # PAC: a device's cached step at 1, 2, ... rows, measured (not linear in rows)

    def cached_flops(self, rows: int) -> float:
        """A device's step on the activation cache with `rows` samples: measured at that row count where
        calibrated, else (and beyond the measured rows) the call cost plus a cost per row."""
        if rows <= 0:
            return 0.0
        t = self.cached_rows_flops
        if t and rows <= len(t):
            return float(t[rows - 1])
        if t:
            return float(t[-1]) + (rows - len(t)) * self.cached_step_flops
        return self.cached_call_flops + rows * self.cached_step_flops

    def all_trainable(self) -> float:
        """Parameters the runtime keeps in sync (all-reduce, deft's broadcast): measured, else the layers' sum."""
        return self.trainable_total or float(self.trainable.sum())

    @property
    def num_layers(self) -> int:
        return len(self.params)

    @property
    def weight_bytes(self) -> float:
        return float(self.params.sum() + self.embed_params + self.head_params) * self.workload.dtype_bytes

    def trainable_state_bytes(self, n_trainable: float) -> float:
        """Weights' gradients and optimizer moments for n trainable parameters (fp32 state)."""
        return n_trainable * (self.workload.dtype_bytes + 4 * self.workload.optimizer_states)

    def update_bytes(self, start: int, end: int) -> float:
        """Bytes to upload after training layers [start, end): their trainable parameters."""
        return float(self.trainable[start:end].sum()) * self.workload.dtype_bytes

    def full_forward(self) -> float:
        return float(self.embed_fwd + self.fwd.sum() + self.head_fwd)

    def to_dict(self) -> dict:
        out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        out["arch"] = self.arch.to_dict()
        out["workload"] = asdict(self.workload)
        return out

    def scaled(self, batch: int) -> "CostTable":
        """The same table for another batch size (FLOPs and activations are linear in batch)."""
        f = batch / self.workload.batch
        wl = Workload(**{**asdict(self.workload), "batch": batch})
        # by name: the fields after boundary_bytes were passed by position, and trainable_total and
        # cached_call_flops had changed places
        return replace(self, workload=wl, fwd=self.fwd * f, bwd_pass=self.bwd_pass * f, bwd_train=self.bwd_train * f,
                       act_saved=self.act_saved * f, embed_fwd=self.embed_fwd * f, head_fwd=self.head_fwd * f,
                       head_bwd=self.head_bwd * f, head_saved=self.head_saved * f,
                       boundary_bytes=self.boundary_bytes * f, notes=dict(self.notes))


def analytic_costs(arch: ModelArch, workload: Workload) -> CostTable:
    """Counts from the model config alone (no weights); each method adds its own work (Method.block_cost)."""
    L, h = arch.num_layers, arch.hidden_size
    B, s, dt = workload.batch, workload.seq_len, workload.dtype_bytes
    tokens = B * s
    total, mat = block_params(arch)
    attn_fwd = 4.0 * B * s * s * arch.q_dim  # QK^T and PV; a causal mask still computes the full square on CPU
    fwd = 2.0 * tokens * mat + attn_fwd
    bwd_in = 2.0 * tokens * mat + 2 * attn_fwd  # input gradients of every matmul, attention backward
    from edgeft.methods.base import DenseBlock

    dense = DenseBlock(params=total, matmul_params=mat, tokens=tokens, dtype_bytes=dt, fwd=fwd, bwd_input=bwd_in,
                       act_saved=_saved_elems_per_token(arch, s, workload.attention) * tokens * dt)
    method = _method_class(workload.method)
    cost = method.block_cost(arch, workload, dense)
    trainable, fwd, bwd_in, bwd_tr, saved = cost.trainable, cost.fwd, cost.bwd_pass, cost.bwd_train, cost.act_saved

    emb = arch.vocab_size * h + (arch.max_positions * h + arch.type_vocab_size * h + 2 * h if arch.family == "bert" else 0)
    kind = workload.kind_for(arch)
    if kind == "causal_lm":
        head = h + (0 if arch.tie_embeddings else arch.vocab_size * h)
        head_fwd = 2.0 * tokens * h * arch.vocab_size
        head_bwd = head_fwd  # input gradient only (the head is frozen under lora/pac; full trains it too)
        head_saved = tokens * (arch.vocab_size * 2 + h) * dt  # logits and log-softmax, normed input
    else:
        head = h * h + h + h * workload.num_labels + workload.num_labels
        head_fwd = 2.0 * B * (h * h + h * workload.num_labels)
        head_bwd = 2 * head_fwd
        head_saved = B * 3 * h * dt
    ones = np.ones(L)
    return CostTable(
        arch=arch, workload=workload, params=ones * total, trainable=ones * trainable, fwd=ones * fwd,
        bwd_pass=ones * bwd_in, bwd_train=ones * bwd_tr, act_saved=ones * saved, embed_params=emb,
        head_params=head, embed_fwd=float(tokens * h * 4), head_fwd=head_fwd, head_bwd=head_bwd,
        head_saved=float(head_saved), boundary_bytes=float(tokens * h * dt),
        embed_trainable=float(emb) if method.trains_embedding else 0.0,
    )


def paper_psi(batch: int, seq: int, hidden: int) -> float:
    """The split paper's per-layer training FLOPs: psi(d) = 72 B d h^2 + 12 B d^2 h (forward + backward)."""
    return 72.0 * batch * seq * hidden**2 + 12.0 * batch * seq**2 * hidden
