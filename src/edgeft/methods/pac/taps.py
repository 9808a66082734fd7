"""Which blocks the side network reads (the tap set) and which token positions it needs.

The side network works token by token, so an objective that scores one position needs that
position's taps only: causal-LM classification (a verbalizer reads the last token) keeps the last
real token, an encoder classifier keeps the mean (or the first, [CLS]) of its tokens, and language
modelling keeps every real token. Caching only those is what keeps the cache small.
"""

from __future__ import annotations

from typing import Literal, Union

import torch

from edgeft.errors import ConfigError

Positions = Literal["last", "first", "mean", "all"]
TapSpec = Union[str, int, list]
EMPTY_TAPS = ("taps: an empty list taps no block; give block indices, 'every:K' or 'all' (the last block is always "
              "tapped: [-1] taps it alone).")


def parse_taps(spec: TapSpec, num_blocks: int) -> tuple[int, ...]:
    """'all' | 'every:K' (or an int K) | 'i,j,k' | [i, j, k] -> sorted block indices.

    The last block is always tapped: its output is the backbone's final hidden state, which the side
    network's result joins before the head.
    """
    last = num_blocks - 1
    if isinstance(spec, int) or (isinstance(spec, str) and (spec.startswith("every:") or spec.strip().isdigit()
                                                            and "," not in spec)):
        try:
            k = spec if isinstance(spec, int) else int(spec.split(":", 1)[-1])
        except ValueError:
            raise ConfigError(f"taps: '{spec}' is not 'all', 'every:K' (K a whole number) or a list of block "
                              "indices.") from None
        if k < 1:
            raise ConfigError(f"taps: every K-th block needs K >= 1 (got {k}); block indices are a list, e.g. "
                              f"taps=[{k}].")
        picked = set(range(k - 1, num_blocks, k))
    elif spec == "all":
        picked = set(range(num_blocks))
    else:
        items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
        try:
            given = {int(i) for i in items}
        except ValueError as err:
            raise ConfigError(f"taps: '{spec}' is not 'all', 'every:K' or a list of block indices.") from err
        if not given:  # it tapped the last block alone, without a word
            raise ConfigError(EMPTY_TAPS)
        bad = sorted(i for i in given if not -num_blocks <= i < num_blocks)  # as given: -9 was reported as -5
        if bad:
            raise ConfigError(f"taps: block(s) {bad} outside 0..{last} (or -{num_blocks}..-1, counted from the end; "
                              f"this backbone has {num_blocks} blocks).")
        picked = {i % num_blocks for i in given}
    picked.add(last)
    return tuple(sorted(picked))


def select(hidden: torch.Tensor, mask: torch.Tensor, positions: Positions) -> torch.Tensor:
    """(B, T, H) block output -> (B, P, H): P = 1 pooled/picked position, or T for 'all'."""
    if positions == "all":
        return hidden
    if positions == "mean":
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return ((hidden * m).sum(1) / m.sum(1).clamp_min(1.0)).unsqueeze(1)
    idx = last_index(mask) if positions == "last" else first_index(mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx].unsqueeze(1)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (works for left and right padding)."""
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), pos, torch.full_like(pos, -1)).amax(1).clamp_min(0)


def first_index(mask: torch.Tensor) -> torch.Tensor:
    return mask.long().argmax(1)
