"""The integer grid weights are quantised onto, and how the integers are packed into bytes.

Follows the quantiser of the GPTQ reference code (IST-DASLab/gptq, quant.py): per output row and
per group of input columns, min-max range that always contains 0, asymmetric (integer zero point)
or symmetric. Symmetric grids follow ggml's Q4_0/Q8_0 rather than the reference: the scale is the
signed value of largest magnitude over -2^(bits-1) (it may be negative), so that value is exact and
the step is 8/7.5 times finer than the reference's 2·max|w|/15, and 4-bit g32 codes *are* Q4_0 blocks.
One change that keeps storage honest: the scale is rounded to float16 *before* it is
used, so the values GPTQ feeds its error correction are bit-for-bit the values the packed file
dequantises to (scales are stored as float16, as in every GPTQ checkpoint format).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeft.errors import ConfigError

PACKABLE_BITS = (2, 4, 8)


def check_bits(bits: int, where: str = "bits") -> int:
    if bits not in PACKABLE_BITS:
        raise ConfigError(f"{where}={bits}: unsupported quantisation width; edgeft packs {list(PACKABLE_BITS)} bit "
                          "integers (use 4 or 8 for GPTQ).")
    return bits


def check_group_size(group_size: int, where: str = "group_size") -> int:
    if group_size != -1 and group_size < 8:
        raise ConfigError(f"{where}={group_size}: use -1 (one group per row) or a group of at least 8 columns "
                          "(128 is the usual choice).")
    return group_size


@dataclass(frozen=True)
class QuantGrid:
    """bits + symmetric/asymmetric (+ optional clipping search): how the integer grid of a group is chosen.

    mse: instead of the full min-max range, try ranges shrunk by p = 1, 0.99, ..., 0.21 and keep the one
    with the smallest sum |w - q(w)|^2.4 per row, as the reference Quantizer's `mse=True` (grid 100,
    maxshrink 0.8, norm 2.4) does.
    """

    bits: int = 4
    sym: bool = False
    mse: bool = False
    grid: int = 100
    maxshrink: float = 0.8
    norm: float = 2.4

    @property
    def maxq(self) -> int:
        return 2 ** self.bits - 1

    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero) per row of w (rows, cols): scale float16-exact float32, zero integer-valued float32."""
        w = w.float()
        zero_t = torch.zeros(w.shape[0], device=w.device)
        xmin = torch.minimum(w.min(dim=1).values, zero_t)
        xmax = torch.maximum(w.max(dim=1).values, zero_t)
        empty = (xmin == 0) & (xmax == 0)
        xmin = torch.where(empty, -torch.ones_like(xmin), xmin)
        xmax = torch.where(empty, torch.ones_like(xmax), xmax)
        scale, zero = self._from_range(xmin, xmax)
        if self.mse:  # all shrink factors of a chunk at once; argmin keeps the first best, like the loop
            best = torch.full_like(scale, float("inf"))
            shrinks = 1 - torch.arange(int(self.maxshrink * self.grid), dtype=torch.float32) / self.grid
            chunk = max(1, (1 << 24) // max(w.numel(), 1))
            rows = torch.arange(w.shape[0], device=w.device)
            for c0 in range(0, len(shrinks), chunk):
                p = shrinks[c0:c0 + chunk, None]
                s1, z1 = self._from_range(p * xmin, p * xmax)  # (k, rows)
                err = (self.fake_quantize(w, s1[..., None], z1[..., None]) - w).abs_().pow_(self.norm).sum(-1)
                e, k = err.min(0)
                better = e < best
                best = torch.where(better, e, best)
                scale = torch.where(better, s1[k, rows], scale)
                zero = torch.where(better, z1[k, rows], zero)
        return scale, zero

    def _from_range(self, xmin: torch.Tensor, xmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = (self.maxq + 1) / 2
        if self.sym:  # ggml's Q4_0/Q8_0 rule: the value of largest magnitude m lands exactly on code 0, scale = -m/8
            scale = torch.where(xmin.abs() >= xmax, xmin, xmax) / -half
        else:
            scale = (xmax - xmin) / self.maxq
        scale = scale.half().float()
        scale = torch.where(scale == 0, torch.full_like(scale, 2.0 ** -24), scale)  # float16's smallest step
        if self.sym:
            zero = torch.full_like(scale, half)
        else:
            zero = torch.round(-xmin / scale).clamp(0, self.maxq)
        return scale, zero

    def quantize(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """Integer codes in [0, maxq]; scale and zero broadcast against w (e.g. shape (rows, 1)). With `out` (of
        the broadcast shape) the same floats are computed in place there: GPTQ's column loop then allocates nothing."""
        if out is None:
            return torch.clamp(torch.round(w / scale) + zero, 0, self.maxq)
        return torch.div(w, scale, out=out).round_().add_(zero).clamp_(0, self.maxq)

    @staticmethod
    def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                   out: torch.Tensor | None = None) -> torch.Tensor:
        """scale · (q - zero); with `out`, computed in place there (the product commutes exactly)."""
        if out is None:
            return scale * (q - zero)
        return torch.sub(q, zero, out=out).mul_(scale)

    def fake_quantize(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        return self.dequantize(self.quantize(w, scale, zero), scale, zero)


def group_count(columns: int, group_size: int) -> int:
    return 1 if group_size == -1 else -(-columns // group_size)


def group_index(columns: int, group_size: int, device=None) -> torch.Tensor:
    """Group of each input column (the last group may be shorter when group_size does not divide it)."""
    if group_size == -1:
        return torch.zeros(columns, dtype=torch.long, device=device)
    return torch.arange(columns, device=device) // group_size


def rtn_quantize(w: torch.Tensor, grid: QuantGrid, group_size: int):
    """Round-to-nearest: the baseline GPTQ is measured against. Returns (codes, scales, zeros)."""
    rows, cols = w.shape
    gs = cols if group_size == -1 else group_size
    codes = torch.empty(rows, cols, dtype=torch.float32)
    scales, zeros = [], []
    for g0 in range(0, cols, gs):
        s, z = grid.params(w[:, g0:g0 + gs])
        codes[:, g0:g0 + gs] = grid.quantize(w[:, g0:g0 + gs].float(), s[:, None], z[:, None])
        scales.append(s)
        zeros.append(z)
    return codes, torch.stack(scales, 1), torch.stack(zeros, 1)


def dequantize_codes(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """Float32 weight from integer codes (rows, cols) and per-group scales/zeros (rows, groups)."""
    g = group_index(codes.shape[1], group_size, codes.device)
    return scales.float()[:, g] * (codes.float() - zeros.float()[:, g])


# -- packing ------------------------------------------------------------------------------------------

def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 tensor holding 8/bits codes per byte along the last dimension (low bits first)."""
    check_bits(bits)
    codes = codes.to(torch.uint8)
    per = 8 // bits
    rows, cols = codes.shape
    pad = (-cols) % per
    if pad:
        codes = torch.cat([codes, torch.zeros(rows, pad, dtype=torch.uint8, device=codes.device)], 1)
    codes = codes.view(rows, -1, per)
    out = torch.zeros(codes.shape[:2], dtype=torch.uint8, device=codes.device)
    for k in range(per):
        out |= codes[:, :, k] << (bits * k)
    return out


def unpack(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of pack: uint8 codes (rows, cols)."""
    check_bits(bits)
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * k)) & mask for k in range(per)]
    return torch.stack(parts, -1).reshape(packed.shape[0], -1)[:, :cols]
