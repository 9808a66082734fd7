"""Parallel adapters: a small side network that reads the frozen backbone's block outputs.

For each tapped block i, a bottleneck adapter maps that block's output h_i (hidden size H) to a
width-r side feature:  z_i = act(W_i · LN(h_i) + b_i).  All adapters run side by side (one batched
einsum over taps), because none depends on another. The side features are then combined along the
depth of the side network in the spirit of Ladder Side-Tuning (Sung et al., NeurIPS 2022):

  gated   s_i = mu_i * s_{i-1} + (1 - mu_i) * z_i, mu_i = sigmoid(g_i) learned; this recurrence is
          linear, so it is computed in closed form (s = sum_i c_i z_i) - fast, no per-tap loop
  sum     s = mean_i z_i
  ladder  the gated recurrence with a small residual MLP after every step (more capacity, one
          small block per tap, so n sequential steps)

then, optionally (`heads` > 0), one residual self-attention layer of width r across positions
(causal for language modelling on a causal LM, padding masked; PAC's `side_attention`), followed by
`side_blocks` residual MLP blocks of width r
(`layers` > 1 stacks more such attention + MLP layers),
and an up-projection r -> H, initialised to zero so that training starts exactly at the frozen
backbone. The result is added to the backbone's final hidden state (as it is, or in units of that state's RMS:
`out_scale`, see `join`), before the frozen final norm + LM head or a trainable task head.

`side_init=backbone` (see `prune_blocks`) replaces those side layers with copies of the backbone's own
last `layers` blocks, structurally pruned to the side width, as Ladder Side-Tuning initialises its
side network. Their side stream starts as the kept channels of the tapped state that enters those
blocks, so at width r = H the side layers recompute the backbone's last blocks exactly; the adapters'
combined feature joins that stream through a zero-initialised gain.

Without the attention layer the network is per token: it never mixes positions (the backbone's
attention already did), which is what lets the activation cache keep only the positions an
objective needs (the last token, a pooled vector). The attention layer gives the side network its
own reading of the whole input - LST's side network has attention in every layer; one layer at the
top keeps the cached epochs cheap - at the price of caching every token's taps.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgeft.models.modules import set_module
from edgeft.errors import ConfigError

Combine = Literal["gated", "sum", "ladder"]
TapNorm = Literal["token", "channel"]
OutScale = Literal["fixed", "stream"]
STD_FLOOR = 1e-2  # channel standardisation: a channel whose std is below this (in token-RMS units) is not blown up


def stream_rms(x: torch.Tensor) -> torch.Tensor:
    """Each position's RMS over the channels, (..., H) -> (..., 1), in x's dtype. Computed in float32: a Llama
    stream's outlier channels (SmolLM2's reach ~1e3) square past fp16's range."""
    return x.float().pow(2).mean(-1, keepdim=True).sqrt().to(x.dtype)


class SideBlock(nn.Module):
    """x + W2 act(W1 LN(x)): a residual MLP of width r (expansion 2)."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm(x)))))


class SideAttention(nn.Module):
    """x + W_o MHA(LN(x)) across positions, masked for padding (and the future, when causal)."""

    def __init__(self, width: int, heads: int, causal: bool, dropout: float):
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, r = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, r // self.heads).permute(2, 0, 3, 1, 4)
        keep = torch.ones(b, 1, t, t, dtype=torch.bool, device=x.device) if mask is None \
            else mask[:, None, None, :].bool().expand(b, 1, t, t)
        if self.causal:
            keep = keep & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        keep = keep | torch.eye(t, dtype=torch.bool, device=x.device)  # padding queries see themselves: no NaN
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0)
        return x + self.out(y.transpose(1, 2).reshape(b, t, r))


class SideLayer(nn.Module):
    """One more side transformer layer: attention across positions (if any heads), then MLP blocks."""

    def __init__(self, width: int, heads: int, causal: bool, dropout: float, side_blocks: int):
        super().__init__()
        self.attention = SideAttention(width, heads, causal, dropout) if heads else None
        self.blocks = nn.ModuleList(SideBlock(width, dropout) for _ in range(side_blocks))

    def forward(self, s: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return _side_layer(s, mask, self.attention, self.blocks)


def _side_layer(s: torch.Tensor, mask: torch.Tensor | None, attention: SideAttention | None,
                blocks: nn.ModuleList) -> torch.Tensor:
    """Attention across positions (if any), then the MLP blocks: one side layer's computation."""
    if attention is not None:
        s = attention(s, mask)
    for block in blocks:
        s = block(s)
    return s


# Where each family's block reads from and writes to its residual stream (dotted module names).
_LAYOUT = {
    "llama": dict(q="self_attn.q_proj", kv=("self_attn.k_proj", "self_attn.v_proj"), o="self_attn.o_proj",
                  mlp_in=("mlp.gate_proj", "mlp.up_proj"), mlp_out="mlp.down_proj",
                  norms=("input_layernorm", "post_attention_layernorm"), head_dim="self_attn.head_dim"),
    "bert": dict(q="attention.self.query", kv=("attention.self.key", "attention.self.value"),
                 o="attention.output.dense", mlp_in=("intermediate.dense",), mlp_out="output.dense",
                 norms=("attention.output.LayerNorm", "output.LayerNorm"),
                 head_dim="attention.self.attention_head_size"),
}


def copy_obstacle(family: str, width: int, hidden: int, num_blocks: int | None = None,
                  side_layers: int | None = None) -> str | None:
    """Why side_init=backbone cannot copy blocks for this backbone and side width (None: it can). One check for
    the explicit option (an error) and for side_init=auto (a fall back to random side layers)."""
    if num_blocks is not None and num_blocks - side_layers - 1 < 0:
        return (f"copies the last side_layers={side_layers} blocks and feeds them the tapped output of the block "
                f"before; this backbone has {num_blocks} blocks, so side_layers must be at most {num_blocks - 1}")
    if family not in _LAYOUT:
        return f"no block layout to copy for model family '{family}' ({', '.join(_LAYOUT)})"
    if not 1 <= width <= hidden:
        return (f"the side width {width} must be between 1 and the hidden size {hidden} (the copies are pruned "
                f"from the backbone's blocks, not widened)")
    return None


def _weight(block: nn.Module, name: str) -> torch.Tensor:
    return block.get_submodule(name).weight.detach().float()


def _head_dim(block: nn.Module, dotted: str) -> int:
    """The attention module's head size (an attribute, not a submodule, hence not get_submodule)."""
    parent, _, attr = dotted.rpartition(".")
    return int(getattr(block.get_submodule(parent), attr))


def _cut_linear(lin: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    """A new Linear with only the given output rows / input columns of `lin` (None: all)."""
    w = lin.weight.detach()
    w = w if rows is None else w[rows]
    w = w if cols is None else w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, dtype=torch.float32)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if rows is None else lin.bias.detach()[rows])
    return new


def _cut_norm(norm: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of a LayerNorm / RMSNorm over the kept channels only."""
    new = copy.deepcopy(norm)
    new.weight = nn.Parameter(norm.weight.detach()[keep].float().clone())
    if getattr(norm, "bias", None) is not None:
        new.bias = nn.Parameter(norm.bias.detach()[keep].float().clone())
    if hasattr(new, "normalized_shape"):
        new.normalized_shape = (len(keep),)
    return new


def _set_head_counts(block: nn.Module, dotted_head_dim: str, heads: int, kv_heads: int, head_dim: int) -> None:
    """The pruned copy's head counts, where its attention module keeps them: transformers 4.x's BERT reshapes by
    `num_attention_heads` (5.x infers it from the projection), so a copy with fewer heads needs them set."""
    attn = block.get_submodule(dotted_head_dim.rpartition(".")[0])
    for attr, value in (("num_attention_heads", heads), ("num_heads", heads), ("all_head_size", heads * head_dim),
                        ("num_key_value_heads", kv_heads)):
        if isinstance(getattr(attn, attr, None), int):
            setattr(attn, attr, value)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in ascending index order (ties: the lower index)."""
    return torch.sort(torch.topk(scores, k, sorted=False).indices).values


def prune_blocks(blocks: list[nn.Module], family: str, width: int) -> tuple[nn.ModuleList, torch.Tensor]:
    """Trainable copies of `blocks` (consecutive backbone blocks) structurally pruned to residual width `width`.

    Importance is weight magnitude (L1, as in Li et al. 2017, the pruning Ladder Side-Tuning uses):
    - residual channels (shared by all copies, since they are one stream): a channel's importance is the
      sum of |w| over every weight that reads it (query/key/value and MLP input columns) or writes it
      (attention output and MLP output rows) in all the copied blocks; the `width` largest are kept;
    - attention heads, per block, in whole key/value groups (grouped-query attention; one head per group
      for BERT): a group's importance is the sum of |w| of its query, key and value rows and of its heads'
      output-projection columns; round(groups * width / H) groups (at least one) are kept;
    - MLP channels, per block: the sum of |w| of their input rows (gate and up for Llama) and output
      column; round(I * width / H) (at least one) are kept.
    Head size, norms' epsilon, activation and rotary embeddings are the backbone's. At width = H nothing is
    pruned and the copies compute exactly what the blocks compute. Returns (copies, kept residual channels).
    """
    hidden = blocks[0].get_submodule(_LAYOUT[family]["o"]).out_features if family in _LAYOUT else width
    obstacle = copy_obstacle(family, width, hidden)
    if obstacle:
        raise ConfigError(f"side_init=backbone: {obstacle}.")
    lay = _LAYOUT[family]
    score = torch.zeros(hidden)
    for b in blocks:
        for name in (lay["q"], *lay["kv"], *lay["mlp_in"]):
            score += _weight(b, name).abs().sum(0)
        for name in (lay["o"], lay["mlp_out"]):
            score += _weight(b, name).abs().sum(1)
    keep = _top(score, width)
    copies = nn.ModuleList()
    for b in blocks:
        c = copy.deepcopy(b).float()
        d = _head_dim(b, lay["head_dim"])
        q, k = _weight(b, lay["q"]), _weight(b, lay["kv"][0])
        n_q, n_kv = q.shape[0] // d, k.shape[0] // d
        group = n_q // n_kv
        o = _weight(b, lay["o"])
        g_score = q.abs().sum(1).view(n_kv, group * d).sum(1) + o.abs().sum(0).view(n_kv, group * d).sum(1)
        for name in lay["kv"]:
            g_score += _weight(b, name).abs().sum(1).view(n_kv, d).sum(1)
        groups = _top(g_score, n_kv if width == hidden else max(1, round(n_kv * width / hidden)))
        kv_rows = (groups[:, None] * d + torch.arange(d)).flatten()
        q_rows = (groups[:, None] * group * d + torch.arange(group * d)).flatten()
        mlp_w = [_weight(b, name) for name in lay["mlp_in"]]
        inner = mlp_w[0].shape[0]
        m_score = sum(w.abs().sum(1) for w in mlp_w) + _weight(b, lay["mlp_out"]).abs().sum(0)
        mlp = _top(m_score, inner if width == hidden else max(1, round(inner * width / hidden)))
        set_module(c, lay["q"], _cut_linear(b.get_submodule(lay["q"]), q_rows, keep))
        for name in lay["kv"]:
            set_module(c, name, _cut_linear(b.get_submodule(name), kv_rows, keep))
        set_module(c, lay["o"], _cut_linear(b.get_submodule(lay["o"]), keep, q_rows))
        for name in lay["mlp_in"]:
            set_module(c, name, _cut_linear(b.get_submodule(name), mlp, keep))
        set_module(c, lay["mlp_out"], _cut_linear(b.get_submodule(lay["mlp_out"]), keep, mlp))
        for name in lay["norms"]:
            set_module(c, name, _cut_norm(b.get_submodule(name), keep))
        _set_head_counts(c, lay["head_dim"], len(q_rows) // d, len(groups), d)
        c.requires_grad_(True)
        copies.append(c)
    return copies, keep


def merge_moments(a: tuple, b: tuple) -> tuple:
    """Chan et al.'s pairwise merge of (rows, mean, sum of squared deviations); (0, None, None) is empty."""
    (na, ma, sa), (nb, mb, sb) = a, b
    if not nb:
        return a
    if not na:
        return b
    delta = mb - ma
    return na + nb, ma + delta * (nb / (na + nb)), sa + sb + delta.pow(2) * (na * nb / (na + nb))


class ParallelAdapters(nn.Module):
    def __init__(self, hidden: int, num_taps: int, width: int, combine: Combine = "gated", dropout: float = 0.1,
                 side_blocks: int = 1, heads: int = 0, causal: bool = True, layers: int = 1,
                 copies: nn.ModuleList | None = None, channels: torch.Tensor | None = None, entry_tap: int = 0,
                 tap_norm: TapNorm = "token", out_scale: OutScale = "fixed"):
        """`copies` (from `prune_blocks`): side layers copied from the backbone (side_init=backbone), fed
        with the kept `channels` of tap number `entry_tap` (the input of the first copied block); then
        `heads` only says whether they attend across positions (> 0) or see each position alone (0).
        `tap_norm="channel"` standardises every (tap, channel) after the per-token norm, with statistics
        that `fit_tap_stats` measures on training samples before the first step (see there).
        `out_scale` says how the correction joins the backbone's final state (see `join`)."""
        super().__init__()
        self.tap_norm, self.out_scale = tap_norm, out_scale
        self.causal = causal  # whether the side layers' own attention is causal (copied blocks attend as the backbone)
        if tap_norm == "channel":
            self.register_buffer("tap_shift", torch.zeros(num_taps, hidden))
            self.register_buffer("tap_scale", torch.ones(num_taps, hidden))
            self.register_buffer("tap_rows", torch.zeros((), dtype=torch.long))  # rows the statistics came from
        if heads and width % heads and copies is None:
            raise ValueError(f"side width {width} is not divisible by {heads} attention heads")
        self.heads = heads
        self.hidden, self.num_taps, self.width, self.combine = hidden, num_taps, width, combine
        self.down = nn.Parameter(torch.randn(num_taps, hidden, width) / math.sqrt(hidden))
        self.down_bias = nn.Parameter(torch.zeros(num_taps, width))
        # Gate logits initialised so that the recurrence starts as the plain mean of the taps
        # (mu_i = (i-1)/i), so no tap starts out drowned by the later ones.
        mu = torch.tensor([(i - 1) / i for i in range(1, num_taps + 1)]).clamp(1e-3, 1 - 1e-3)
        self.gate = nn.Parameter(torch.log(mu) - torch.log1p(-mu)) if combine != "sum" else None
        self.steps = nn.ModuleList(SideBlock(width, dropout) for _ in range(num_taps)) if combine == "ladder" \
            else nn.ModuleList()
        self.copies = copies
        if copies is not None:  # side_init=backbone: the copied blocks are the side layers, then side_blocks MLPs
            self.register_buffer("channels", channels.clone())
            self.entry_tap = entry_tap
            self.gain = nn.Parameter(torch.zeros(width))  # the adapters' feature joins the stream from zero
            self.attention, self.more = None, nn.ModuleList()
        else:
            self.attention = SideAttention(width, heads, causal, dropout) if heads else None
            # layers > 1: more attention + MLP layers on top (the first layer keeps the names above)
            self.more = nn.ModuleList(SideLayer(width, heads, causal, dropout, side_blocks)
                                      for _ in range(layers - 1))
        self.blocks = nn.ModuleList(SideBlock(width, dropout) for _ in range(side_blocks))
        self.norm_out = nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.drop = nn.Dropout(dropout)

    def join(self, state: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
        """The backbone's final state (..., H) plus the side network's correction (..., H).

        fixed: added as it is. stream: in units of the state's RMS at each position. Why: a Llama block's output
        is the raw residual stream (SmolLM2's last block: RMS ~35-45 at the last token), so a correction that grows
        from a zero up-projection at Adam's ~lr per step needs hundreds of steps to reach a scale the final norm
        notices, where a BERT block's output (LayerNormed, RMS ~1) needs tens. Scaled by the stream's RMS, the
        correction means the same on every backbone, and the frozen final norm sees state/rms + correction."""
        if self.out_scale == "stream":
            correction = correction * stream_rms(state).to(correction.dtype)
        return state + correction

    def adapters(self, taps: torch.Tensor, sel: torch.Tensor | None = None) -> torch.Tensor:
        """(..., n, H) tapped block outputs -> (..., n, r) side features, every adapter at once.

        act(x W + b), x = LayerNorm(taps) per token (no affine). With tap_norm=channel, x is also standardised per
        (tap, channel), (x - m) s. Why: the backbone's residual stream has a few outlier channels 10-25x the
        token's RMS (SmolLM2: the same four channels at every depth), so after a per-token norm they dominate
        every adapter's input, and Adam moves the many small channels' weights with little effect; standardised
        (as a linear probe's features are), every channel counts. The standardisation rides on the
        down-projection, ((x - m) s) W + b = x (s W) + (b - (m s) W), so it adds no pass over the activations.
        `sel`: a subset of the taps (a pipeline stage's)."""
        down, bias = (self.down, self.down_bias) if sel is None else (self.down[sel], self.down_bias[sel])
        if self.tap_norm == "channel":
            shift, scale = (self.tap_shift, self.tap_scale) if sel is None else (self.tap_shift[sel], self.tap_scale[sel])
            down = scale.unsqueeze(-1) * down
            bias = bias - torch.einsum("nh,nhr->nr", shift, down)
        z = torch.einsum("...nh,nhr->...nr", F.layer_norm(taps, (self.hidden,)), down) + bias
        return self.drop(F.gelu(z))

    @torch.no_grad()
    def fit_tap_stats(self, batches) -> int:
        """tap_norm=channel: measure each (tap, channel)'s mean and std of the per-token-normed taps.

        `batches` yields (taps (B, P, n, H), mask (B, P) or None); only real positions count. Runs once,
        before training; the statistics are buffers, saved with the adapter. Returns the rows counted."""
        if self.tap_norm != "channel":
            return 0
        return self.set_tap_stats(*self.tap_moments(batches))

    @torch.no_grad()
    def tap_moments(self, batches) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """(rows, mean, sum of squared deviations) per (tap, channel) of the per-token-normed taps, in float64.
        Batch moments are merged pairwise (Chan et al.), so float32 batches lose nothing to cancellation; the
        multi-device runtime merges its ranks' moments with the same `merge_moments`."""
        acc = (0, None, None)
        for taps, mask in batches:
            x = taps[mask.bool()] if mask is not None else taps.reshape(-1, self.num_taps, self.hidden)
            x = F.layer_norm(x.float(), (self.hidden,))
            if x.shape[0]:
                b_mean = x.mean(0)
                acc = merge_moments(acc, (x.shape[0], b_mean.double(), (x - b_mean).pow_(2).sum(0).double()))
        return acc

    @torch.no_grad()
    def set_tap_stats(self, rows: int, mean: torch.Tensor | None, m2: torch.Tensor | None) -> int:
        """Store merged moments as the standardisation (shift, 1/std); returns the rows they came from."""
        if rows < 2:
            raise ConfigError("tap_norm=channel: the channel statistics need at least 2 tapped rows of training data.")
        self.tap_shift.copy_(mean.float())
        self.tap_scale.copy_(((m2 / rows).sqrt().clamp_min(STD_FLOOR)).reciprocal().float())
        self.tap_rows.fill_(rows)
        return rows

    def has_tap_stats(self) -> bool:
        """Whether the taps are ready to standardise: tap_norm=token needs no statistics, channel needs them fitted."""
        return self.tap_norm != "channel" or int(self.tap_rows) > 0

    def tap_weights(self) -> torch.Tensor:
        """c_i of the closed-form gated sum: (1 - mu_i) * prod_{j>i} mu_j."""
        log_mu = F.logsigmoid(self.gate)
        log_one_minus = F.logsigmoid(-self.gate)
        later = torch.flip(torch.cumsum(torch.flip(log_mu, [0]), 0), [0]) - log_mu  # sum_{j>i} log mu_j
        return torch.exp(log_one_minus + later)

    def forward(self, taps: torch.Tensor, mask: torch.Tensor | None = None,
                block_inputs: Callable | None = None) -> torch.Tensor:
        """(B, P, n, H) -> (B, P, H) correction added to the backbone's final hidden state.

        `mask` (B, P) marks real tokens when P covers a sequence (the attention layer needs it).
        `block_inputs(hidden, mask)` (the backbone's BlockView.block_inputs) is needed by copied blocks.
        """
        z = self.adapters(taps)
        if self.combine == "sum":
            s = z.mean(-2)
        elif self.combine == "gated":
            s = torch.einsum("...nr,n->...r", z, self.tap_weights())
        else:
            mu = torch.sigmoid(self.gate)
            s = torch.zeros_like(z[..., 0, :])
            for i, step in enumerate(self.steps):
                s = step(mu[i] * s + (1 - mu[i]) * z[..., i, :])
        entry = taps[..., self.entry_tap, :] if self.copies is not None else None
        return self.finish(s, mask, entry=entry, block_inputs=block_inputs)

    def finish(self, s: torch.Tensor, mask: torch.Tensor | None = None, entry: torch.Tensor | None = None,
               block_inputs: Callable | None = None) -> torch.Tensor:
        """Combined side feature (B, P, r) -> correction (B, P, H): attention, MLP blocks, up-projection.

        Separate so a pipeline whose stages each sum their own taps' part ends exactly as forward() does.
        Copied blocks (side_init=backbone) also need `entry` (B, P, H), the tapped input of the first one.
        """
        if self.copies is not None:
            if entry is None or block_inputs is None:
                raise ConfigError("side_init=backbone: the copied side layers need the tapped state entering them "
                                  "and the backbone's block inputs; this caller (e.g. the multi-device pipeline) "
                                  "provides neither - use side_init=random there.")
            s = self.copied(entry, s, mask, block_inputs)
            for block in self.blocks:
                s = block(s)
            return self.up(self.norm_out(s))
        s = _side_layer(s, mask, self.attention, self.blocks)  # the first layer (its weights keep their old names)
        for layer in self.more:
            s = layer(s, mask)
        return self.up(self.norm_out(s))

    def copied(self, entry: torch.Tensor, s: torch.Tensor | None, mask: torch.Tensor | None,
               block_inputs: Callable) -> torch.Tensor:
        """The copied blocks over the side stream: kept channels of `entry` + gain * (adapters' feature `s`).

        The gain is in units of each position's stream RMS, so it means the same whatever the backbone's
        residual scale. With heads = 0 every position runs alone (per token, as the cache may hold one).
        """
        x = entry.index_select(-1, self.channels)
        if s is not None:
            x = x + self.gain * s * stream_rms(x)
        shape = x.shape
        if not self.heads:
            x, mask = x.reshape(-1, 1, shape[-1]), None
        inputs = block_inputs(x, mask)
        for block in self.copies:
            out = block(x, **inputs)
            x = out[0] if isinstance(out, tuple) else out
        return x.reshape(shape)
