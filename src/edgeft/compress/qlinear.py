"""QuantLinear: a linear layer stored as packed integer codes + float16 scales + integer zero points.

The weight really lives packed in memory and on disk (4-bit: two codes per byte). The forward pass
dequantises it group by group into the activation dtype and runs a dense matmul: on CPU this costs
one extra pass over the (small) packed weight per call, and the result is exactly the weight GPTQ
produced. For 4-bit layers whose groups tile the input (32/64/128/256 dividing in_features) the
forward can instead run torch's int4 CPU kernel (`_weight_int4pack_mm_for_cpu`), never building
the float weight; `use_int4_kernel()` switches it on and tests check both paths agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeft.compress.quantizer import check_bits, dequantize_codes, group_count, pack, unpack

INT4_KERNEL_GROUPS = (32, 64, 128, 256)


class QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int, bias: bool = False,
                 bias_dtype: torch.dtype = torch.float32):
        super().__init__()
        check_bits(bits)
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        groups = group_count(in_features, group_size)
        self.register_buffer("qweight", torch.zeros(out_features, -(-in_features * bits // 8), dtype=torch.uint8))
        self.register_buffer("scales", torch.zeros(out_features, groups, dtype=torch.float16))
        self.register_buffer("qzeros", torch.zeros(out_features, groups, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=bias_dtype), requires_grad=False) if bias else None
        self._kernel = None  # (packed int4 weight, scales-and-zeros) once use_int4_kernel() ran

    @classmethod
    def from_codes(cls, linear: nn.Linear, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                   bits: int, group_size: int) -> "QuantLinear":
        q = cls(linear.in_features, linear.out_features, bits, group_size, linear.bias is not None,
                linear.bias.dtype if linear.bias is not None else torch.float32)
        q.qweight.copy_(pack(codes, bits))
        q.scales.copy_(scales.half())
        q.qzeros.copy_(zeros.to(torch.uint8))
        if linear.bias is not None:
            q.bias.data.copy_(linear.bias.detach())
        return q.to(linear.weight.device)

    def codes(self) -> torch.Tensor:
        return unpack(self.qweight, self.bits, self.in_features)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight (out, in) the codes stand for."""
        return dequantize_codes(self.codes(), self.scales, self.qzeros, self.group_size).to(dtype)

    @property
    def weight(self) -> torch.Tensor:
        """Read-only dequantised weight, for code that inspects `.weight` (export, tests)."""
        return self.dequantized()

    # -- the real int4 kernel ---------------------------------------------------------------------------
    def int4_kernel_supported(self) -> bool:
        return (self.bits == 4 and self.group_size in INT4_KERNEL_GROUPS and self.in_features % self.group_size == 0
                and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and self.qweight.device.type == "cpu")

    def use_int4_kernel(self, on: bool = True) -> bool:
        """Switch to torch's int4 CPU kernel; returns whether it is now in use."""
        if not on or not self.int4_kernel_supported():
            self._kernel = None
            return False
        codes = self.codes().to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        # kernel convention: w = (q - 8) * scale + zero  <=>  ours: w = scale * (q - z)  => zero = scale * (8 - z)
        scale = self.scales.float()
        zero = scale * (8.0 - self.qzeros.float())
        self._kernel = (packed, torch.stack([scale.t(), zero.t()], -1).contiguous())
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel is not None and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
            packed, sz = self._kernel
            shape = x.shape
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).contiguous(), packed,
                                                           self.group_size, sz.to(x.dtype))
            y = y.reshape(*shape[:-1], self.out_features)
            return y + self.bias.to(y.dtype) if self.bias is not None else y
        return F.linear(x, self.dequantized(x.dtype), self.bias.to(x.dtype) if self.bias is not None else None)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, bias={self.bias is not None}")
