"""Convolutions with a bfloat16 CPU fast path for tiny feature maps, shared by the built-in plugins.

oneDNN runs the innermost layers of a U-Net or DCGAN slowly under CPU bfloat16 autocast: few output
positions (2x2, 4x4) and many channels. These subclasses run such layers as one matrix product over
unfolded patches instead. Whole training steps chose the thresholds; `python -m stylezoo.benchmarks.small_convs`
times the layers alone (figures: docs/benchmarks.md).
So the matrix product is used only under CPU bfloat16 autocast, for at most `CONV_MAX_POSITIONS`
convolution outputs or `CONVT_MAX_POSITIONS` transposed-convolution inputs. Everywhere else, and always in
float32, on CUDA and in exports, these are the stock layers: same parameters, same state dict.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# spatial positions on the small side up to which the matrix product is used (see above)
CONV_MAX_POSITIONS = 4  # 16 helped the U-Net as much but slowed the DCGAN recipe's discriminator
CONVT_MAX_POSITIONS = 16


def _eager() -> bool:
    """Outside a TorchScript trace or script and an ONNX export, which must see the stock ops."""
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())


def _bf16_cpu(x: Tensor) -> bool:
    """Whether `x` is on the CPU under bfloat16 autocast, outside an export trace."""
    return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16 and _eager())


def _plain(m: nn.Conv2d | nn.ConvTranspose2d) -> bool:
    return (m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and all(d == 1 for d in m.dilation))


class Conv2d(nn.Conv2d):
    """nn.Conv2d; under CPU bfloat16 autocast with at most CONV_MAX_POSITIONS outputs, one matrix product."""

    def forward(self, x: Tensor) -> Tensor:
        if not (_bf16_cpu(x) and _plain(self) and x.dim() == 4):
            return super().forward(x)
        pad = cast("tuple[int, ...]", self.padding)  # _plain() refused string padding
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, pad
        ho, wo = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
        if ho * wo > CONV_MAX_POSITIONS:
            return super().forward(x)
        cols = F.unfold(x.to(torch.bfloat16), self.kernel_size, padding=pad, stride=self.stride)
        y = self.weight.flatten(1) @ cols  # (O, C*kh*kw) @ (N, C*kh*kw, L): autocast runs it in bfloat16
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)[:, None]
        return y.view(x.shape[0], self.out_channels, ho, wo)


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d; under CPU bfloat16 autocast with at most CONVT_MAX_POSITIONS inputs, a matrix
    product and a fold."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if not (_bf16_cpu(x) and _plain(self) and x.dim() == 4 and output_size is None
                and not any(self.output_padding) and x.shape[2] * x.shape[3] <= CONVT_MAX_POSITIONS):
            return super().forward(x, output_size)
        pad = cast("tuple[int, ...]", self.padding)  # _plain() refused string padding
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, pad
        ho, wo = (x.shape[2] - 1) * sh - 2 * ph + kh, (x.shape[3] - 1) * sw - 2 * pw + kw
        cols = self.weight.flatten(1).t() @ x.flatten(2)  # (O*kh*kw, C) @ (N, C, L), in bfloat16
        y = F.fold(cols.float(), (ho, wo), self.kernel_size, padding=pad, stride=self.stride)
        y = y.to(cols.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)[:, None, None]
        return y


class ReflectionPad2d(nn.ReflectionPad2d):
    """nn.ReflectionPad2d that keeps its input's dtype under autocast, with a faster backward on the CPU.

    Autocast lists reflection padding among the float32 ops, so a bfloat16 activation was padded in float32
    and cast back to bfloat16 by the convolution after it: two casts forward and two backward for an op that
    only copies values. Keeping bf16 makes whole CPU bf16 steps
    faster (docs/benchmarks.md). On the CPU its gradient is `fold_reflection` instead of aten's
    reflection_pad2d_backward, which is slow there. Outside autocast and gradients this is the stock layer.
    """

    def forward(self, x: Tensor) -> Tensor:
        pad = tuple(self.padding)
        fold = x.device.type == "cpu" and x.dim() == 4 and torch.is_grad_enabled() and x.requires_grad and _eager()
        if x.is_meta or not torch.is_autocast_enabled(x.device.type):
            return _ReflectPad.apply(x, pad) if fold else super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return _ReflectPad.apply(x, pad) if fold else F.pad(x, pad, "reflect")


class _ReflectPad(torch.autograd.Function):
    """Reflection padding whose backward is `fold_reflection` (differentiable again, for double backward)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
        ctx.pad = pad  # type: ignore[attr-defined]
        return F.pad(x, pad, "reflect")

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: Tensor) -> tuple[Tensor, None]:
        return fold_reflection(g, ctx.pad), None  # type: ignore[attr-defined]


def fold_reflection(g: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """The gradient of reflection padding by `pad` = (left, right, top, bottom): the padded gradient's
    centre, plus each border row and column added onto the row or column it mirrored.

    One copy of the centre and small adds, against aten's element-by-element accumulation, which is
    several times slower on the CPU (docs/benchmarks.md). The same sums as aten's; where
    three or four terms meet (corners) their order may differ, so float rounding can differ in the last bit.
    """
    left, right, top, bottom = pad
    h, w = g.shape[-2] - top - bottom, g.shape[-1] - left - right

    def cols(x: Tensor) -> Tensor:  # (.., rows, w + left + right) -> (.., rows, w)
        out = x[..., left:left + w].clone()
        if left:
            out[..., 1:left + 1] += x[..., :left].flip(-1)
        if right:
            out[..., w - 1 - right:w - 1] += x[..., left + w:].flip(-1)
        return out

    gi = cols(g[..., top:top + h, :])
    if top:
        gi[..., 1:top + 1, :] += cols(g[..., :top, :]).flip(-2)
    if bottom:
        gi[..., h - 1 - bottom:h - 1, :] += cols(g[..., top + h:, :]).flip(-2)
    return gi


def keep_mask(shape: torch.Size, keep: float, dtype: torch.dtype) -> Tensor:
    """Dropout's scaled mask on the CPU: 0 or 1/keep in `dtype`, each element kept with probability `keep`
    rounded to a multiple of 1/32768.

    Two 15-bit uniform draws (bits 0-14 and 16-30) come out of each 31-bit random integer, so the generator is
    called once per two elements; `Tensor.bernoulli_` calls it once per element and is several times slower
    (docs/benchmarks.md).
    """
    n = shape.numel()
    words = torch.empty((n + 1) // 2, dtype=torch.int32).random_(0, 1 << 31)
    threshold = round(keep * 32768)
    kept = torch.cat([(words & 0x7FFF) < threshold, (words >> 16) < threshold])[:n]
    return kept.view(shape).to(dtype).mul_(1.0 / keep)


class Dropout(nn.Dropout):
    """nn.Dropout; in training on the CPU, the mask comes from `keep_mask` (faster to draw).

    Same distribution and scaling as nn.Dropout (the keep probability rounded to 1/32768), but a different
    random stream: a seed gives other masks than the stock layer's.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and 0.0 < self.p < 1.0 and x.device.type == "cpu" and not self.inplace
                and x.is_floating_point() and _eager()):
            return super().forward(x)
        return x * keep_mask(x.shape, 1.0 - self.p, x.dtype)


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d; a 2x2, stride-2 pool of a contiguous CPU tensor that needs no gradient is the maximum of
    its four strided quarters.

    PyTorch's CPU kernel for contiguous (NCHW) input is slow; the four-quarter maximum is several times
    faster (docs/benchmarks.md; `tests/test_layers.py` checks they agree bit for bit). With a gradient the stock
    kernel stays: its backward is the cheap one, and the quarters' own backward made the pair no faster.
    channels_last input takes the stock kernel too.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (x.device.type == "cpu" and x.dim() == 4 and not (torch.is_grad_enabled() and x.requires_grad)
                and self._halves() and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and x.is_contiguous()
                and _eager()):
            return super().forward(x)
        top, bottom = x[:, :, 0::2], x[:, :, 1::2]
        return torch.maximum(torch.maximum(top[..., 0::2], top[..., 1::2]),
                             torch.maximum(bottom[..., 0::2], bottom[..., 1::2]))

    def _halves(self) -> bool:
        k, s, p, d = (v if isinstance(v, tuple) else (v, v)
                      for v in (self.kernel_size, self.stride or self.kernel_size, self.padding, self.dilation))
        return k == (2, 2) and s == (2, 2) and p == (0, 0) and d == (1, 1) and not self.return_indices


# input width below which a 2x nearest upsampling on the CPU copies into strided slices (see upsample_nearest)
NEAREST_MAX_WIDTH = 64


def upsample_nearest(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """F.interpolate(x, size, mode="nearest"); on the CPU, an exact 2x of a contiguous map narrower than
    NEAREST_MAX_WIDTH is written as strided slices, and its gradient sums 2x2 blocks.

    aten's CPU kernel is slow on narrow maps and fast from 64 columns on, hence NEAREST_MAX_WIDTH
    (docs/benchmarks.md). Same values and the same gradient bits as aten (`sum_blocks`): `make demo`
    writes the same picture byte for byte.
    """
    h, w = x.shape[-2:]
    if (x.device.type == "cpu" and x.dim() == 4 and tuple(size) == (2 * h, 2 * w) and w < NEAREST_MAX_WIDTH
            and x.is_contiguous() and _eager()):  # channels_last keeps aten's kernel (and its layout)
        return cast(Tensor, _Nearest2x.apply(x))
    return F.interpolate(x, size=tuple(size), mode="nearest")


class Upsample(nn.Upsample):
    """nn.Upsample; an exact 2x nearest upsampling goes through `upsample_nearest`."""

    def forward(self, x: Tensor) -> Tensor:
        sf = self.scale_factor
        if (self.mode == "nearest" and self.size is None and x.dim() == 4
                and (sf == 2 or (isinstance(sf, tuple) and all(f == 2 for f in sf)))):
            return upsample_nearest(x, (2 * x.shape[-2], 2 * x.shape[-1]))
        return super().forward(x)


class _Nearest2x(torch.autograd.Function):
    """2x nearest upsampling of (N, C, H, W); the backward is `sum_blocks` (differentiable again)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        out = x.new_empty(n, c, 2 * h, 2 * w)
        out[..., 0::2, 0::2] = x
        out[..., 0::2, 1::2] = x
        out[..., 1::2, :] = out[..., 0::2, :]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: Tensor) -> Tensor:
        return sum_blocks(g)


def sum_blocks(g: Tensor) -> Tensor:
    """(N, C, 2H, 2W) -> (N, C, H, W): the sum of each 2x2 block (the gradient of `_Nearest2x`), added in
    aten's order (row by row, left to right) and, for half precision, in float32 rounded once, as aten's
    backward does: the same bits as its result. (Another order changed the demo's training after 320 steps.)"""
    n, c, hh, ww = g.shape
    low = g.dtype in (torch.bfloat16, torch.float16)
    q = (g.float() if low else g).reshape(n, c, hh // 2, 2, ww // 2, 2)
    out = q[:, :, :, 0, :, 0] + q[:, :, :, 0, :, 1]
    out = out + q[:, :, :, 1, :, 0]
    out = out + q[:, :, :, 1, :, 1]
    return out.to(g.dtype) if low else out


class _GradInFormat(torch.autograd.Function):
    """Identity; the backward hands the gradient on in the memory format given to the forward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, fmt: torch.memory_format) -> Tensor:
        ctx.fmt = fmt  # type: ignore[attr-defined]  # ctx takes any attribute
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: Tensor) -> tuple[Tensor, None]:
        return g.contiguous(memory_format=ctx.fmt), None  # type: ignore[attr-defined]


def grad_in_layout(x: Tensor) -> Tensor:
    """`x` (a channels_last feature map) whose gradient comes back channels_last too.

    Loss terms hand back NCHW gradients (mse_loss's backward, a Gram product's reshape) for channels_last
    features. The ReLU backwards and gradient sums inside the extractor then mix the two layouts and run
    several times slower (docs/benchmarks.md); one copy into channels_last at the boundary costs less.
    Plain contiguous tensors pass through untouched.
    """
    if x.dim() != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return x
    return cast(Tensor, _GradInFormat.apply(x, torch.channels_last))
