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
(causal for a causal LM, padding masked), followed by `side_blocks` residual MLP blocks of width r
(`layers` > 1 stacks more such attention + MLP layers),
and an up-projection r -> H, initialised to zero so that training starts exactly at the frozen
backbone. The result is added to the backbone's final hidden state, before the frozen final norm +
LM head or a trainable task head.

Without the attention layer the network is per token: it never mixes positions (the backbone's
attention already did), which is what lets the activation cache keep only the positions an
objective needs (the last token, a pooled vector). The attention layer gives the side network its
own reading of the whole input - LST's side network has attention in every layer; one layer at the
top keeps the cached epochs cheap - at the price of caching every token's taps.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Combine = Literal["gated", "sum", "ladder"]


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


class ParallelAdapters(nn.Module):
    def __init__(self, hidden: int, num_taps: int, width: int, combine: Combine = "gated", dropout: float = 0.1,
                 side_blocks: int = 1, heads: int = 0, causal: bool = True, layers: int = 1):
        super().__init__()
        if heads and width % heads:
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
        self.attention = SideAttention(width, heads, causal, dropout) if heads else None
        self.blocks = nn.ModuleList(SideBlock(width, dropout) for _ in range(side_blocks))
        # layers > 1: more attention + MLP layers on top (the first layer keeps the names above)
        self.more = nn.ModuleList(SideLayer(width, heads, causal, dropout, side_blocks) for _ in range(layers - 1))
        self.norm_out = nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.drop = nn.Dropout(dropout)

    def adapters(self, taps: torch.Tensor) -> torch.Tensor:
        """(..., n, H) tapped block outputs -> (..., n, r) side features, every adapter at once."""
        x = F.layer_norm(taps, (self.hidden,))
        z = torch.einsum("...nh,nhr->...nr", x, self.down) + self.down_bias
        return self.drop(F.gelu(z))

    def tap_weights(self) -> torch.Tensor:
        """c_i of the closed-form gated sum: (1 - mu_i) * prod_{j>i} mu_j."""
        log_mu = F.logsigmoid(self.gate)
        log_one_minus = F.logsigmoid(-self.gate)
        later = torch.flip(torch.cumsum(torch.flip(log_mu, [0]), 0), [0]) - log_mu  # sum_{j>i} log mu_j
        return torch.exp(log_one_minus + later)

    def forward(self, taps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, P, n, H) -> (B, P, H) correction added to the backbone's final hidden state.

        `mask` (B, P) marks real tokens when P covers a sequence (the attention layer needs it).
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
        return self.finish(s, mask)

    def finish(self, s: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Combined side feature (B, P, r) -> correction (B, P, H): attention, MLP blocks, up-projection.

        Separate so a pipeline whose stages each sum their own taps' part ends exactly as forward() does.
        """
        s = _side_layer(s, mask, self.attention, self.blocks)  # the first layer (its weights keep their old names)
        for layer in self.more:
            s = layer(s, mask)
        return self.up(self.norm_out(s))
