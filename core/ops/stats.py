"""Feature statistics that style losses and metrics share: Gram matrices and channel moments.

All arithmetic is float32 with autocast off, so bfloat16 features are safe; the one bfloat16 operation is
the Gram product of bfloat16 features on the CPU, whose sums and result stay float32 (`_BF16Gram`; for the
style loss `_BF16GramMSE`, which also fuses the loss's backward into one product).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

STD_EPS = 1e-5


def _fp32(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def gram(f: Tensor) -> Tensor:
    """Per-sample Gram matrices f f^T / (c*h*w) of features (N, C, H, W) -> (N, C, C), in float32."""
    with _fp32(f.device):
        n, c, h, w = f.shape
        if f.dtype == torch.bfloat16 and f.device.type == "cpu" and _bf16_fp32_matmul.available():
            x, cl = _matrices(f)
            return _BF16Gram.apply(x, 1.0 / (c * h * w), cl)
        x = f.float().reshape(n, c, h * w)
        return torch.bmm(x, x.transpose(1, 2)) / (c * h * w)


def _matrices(f: Tensor) -> tuple[Tensor, bool]:
    """Features (N, C, H, W) as N matrices without a copy: (N, C, HW), or (N, HW, C) and True when `f` is
    channels_last (the extractor's layout on the CPU under bf16). Reshaping those to (N, C, HW) copied every
    style layer's features forward, and their NCHW gradients were copied back into channels_last."""
    n, c, h, w = f.shape
    if not f.is_contiguous() and f.is_contiguous(memory_format=torch.channels_last):
        return f.permute(0, 2, 3, 1).reshape(n, h * w, c), True
    return f.reshape(n, c, h * w), False


# float32 elements of bfloat16 features cast at a time for a Gram product (8 MiB): a slice in cache, not a copy
# of the whole feature map (about 2.5x faster at VGG16's wide layers, docs/benchmarks.md)
GRAM_SLICE = 1 << 21


def _product(x: Tensor, scale: float, cl: bool) -> Tensor:
    """x x^T * scale of bfloat16 x (N, C, L) (x^T x of (N, L, C) with `cl`) as float32, on oneDNN's bfloat16
    matmul with float32 sums: the positions are cast to float32 (exactly) and multiplied a slice at a time,
    the slices' products summed in float32."""
    n, length, c = (x.shape[0], x.shape[1], x.shape[2]) if cl else (x.shape[0], x.shape[2], x.shape[1])
    step = min(length, max(64, GRAM_SLICE // max(1, n * c)))
    buf = x.new_empty((n, step, c) if cl else (n, c, step), dtype=torch.float32)  # one buffer: no page faults
    out = buf.new_empty(n, c, c)
    with _bf16_fp32_matmul():
        for s in range(0, length, step):
            k = min(step, length - s)
            xf = buf[:, :k].copy_(x[:, s:s + k]) if cl else buf[:, :, :k].copy_(x[:, :, s:s + k])
            a, b = (xf.transpose(1, 2), xf) if cl else (xf, xf.transpose(1, 2))
            if s == 0:
                out.baddbmm_(a, b, beta=0.0, alpha=scale)  # beta 0: the empty buffer is ignored
            else:
                out.baddbmm_(a, b, alpha=scale)
    return out


class _BF16Gram(torch.autograd.Function):
    """x x^T * scale of bfloat16 x (N, C, L) with a float32 result, on oneDNN's bfloat16 matmul.

    bfloat16 inputs lose nothing to the matmul's bfloat16 rounding, and the sums and the output stay
    float32: the same Gram as the float32 product up to summation order (about 1e-6 relative), faster
    on a CPU with AVX512-BF16 (docs/benchmarks.md). A bfloat16 *output* would not do: the style loss subtracts two
    close Grams, and a bfloat16 product (about 3e-3 relative) trained portrait-painting visibly worse.
    The backward, (g + g^T) x * scale, is an ordinary bfloat16 product like any other under autocast.
    With `cl`, x is (N, L, C) and the Gram x^T x (see `_matrices`).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float, cl: bool = False) -> Tensor:
        ctx.save_for_backward(x)
        ctx.scale, ctx.cl = scale, cl
        return _product(x, scale, cl)

    @staticmethod
    @once_differentiable  # a second derivative raises instead of coming out wrong
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        gs = ((g + g.transpose(1, 2)) * ctx.scale).to(torch.bfloat16)  # symmetric: x gs = (gs x^T)^T
        return (torch.bmm(x, gs) if ctx.cl else torch.bmm(gs, x)), None, None


def gram_mse(f: Tensor, target: Tensor) -> Tensor:
    """mean((gram(f) - target)^2) over (N, C, C), in float32; `target` (1 or N, C, C) broadcasts over the batch.

    The same value as F.mse_loss(gram(f), target), fused on the CPU bfloat16 path (`_BF16GramMSE`).
    """
    with _fp32(f.device):
        n, c, h, w = f.shape
        if (f.dtype == torch.bfloat16 and f.device.type == "cpu" and not target.requires_grad
                and _bf16_fp32_matmul.available()):
            x, cl = _matrices(f)
            return _BF16GramMSE.apply(x, target.float(), 1.0 / (c * h * w), cl)
        return F.mse_loss(gram(f), target.float().expand(n, c, c))


class _BF16GramMSE(torch.autograd.Function):
    """mean((x x^T * scale - t)^2) of bfloat16 x (N, C, L), the Gram as in `_BF16Gram`, with one backward pass.

    Composed, the backward went through MSE's (a zero-filled buffer, a product), the Gram's transposed sum
    g + g^T and a scaling: five passes over the (N, C, C) matrices (their cost:
    docs/benchmarks.md). Here it is one bf16 cast of the residual d = G - t and one product:
    dx = (4 * scale / numel) d x, using that d is symmetric (G and the cached targets are Grams; oneDNN may
    sum G's mirror entries in another order, a float32 rounding far below d's bfloat16 cast).
    With `cl`, x is (N, L, C), the Gram x^T x and dx = (4 * scale / numel) x d (see `_matrices`).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, target: Tensor, scale: float, cl: bool = False) -> Tensor:
        d = _product(x, scale, cl)
        d.sub_(target)
        ctx.save_for_backward(x, d)
        ctx.scale, ctx.cl = scale, cl
        flat = d.view(-1)
        return torch.dot(flat, flat) / flat.numel()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:
        x, d = ctx.saved_tensors
        k = float(g) * 4.0 * ctx.scale / d.numel()
        if k == 0:  # a weight of 0: oneDNN's baddbmm with alpha 0 and beta 0 returns its uninitialised input
            return torch.zeros_like(x), None, None, None
        db = d.to(torch.bfloat16)
        a, b = (x, db) if ctx.cl else (db, x)
        return torch.baddbmm(x.new_empty(x.shape), a, b, beta=0.0, alpha=k), None, None, None


class _bf16_fp32_matmul:
    """oneDNN may run float32 matmuls as bfloat16 products with float32 sums (process-wide, so restored)."""

    @staticmethod
    def available() -> bool:
        """Whether this torch has the switch (torch.backends.mkldnn.matmul.fp32_precision; not in torch 2.4)."""
        return hasattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision")

    def __enter__(self) -> None:
        matmul: Any = getattr(torch.backends.mkldnn, "matmul")  # not in every torch's stubs
        self.prev = matmul.fp32_precision
        matmul.fp32_precision = "bf16"

    def __exit__(self, *exc: object) -> None:
        matmul: Any = getattr(torch.backends.mkldnn, "matmul")
        matmul.fp32_precision = self.prev


def moments(f: Tensor) -> tuple[Tensor, Tensor]:
    """Channel-wise mean and std over (h, w) of features (N, C, H, W) -> two (N, C), in float32."""
    with _fp32(f.device):
        x = f.float().flatten(2)
        return x.mean(2), (x.var(2, correction=0) + STD_EPS).sqrt()


gram_matrix = gram  # the public name (stylezoo.gram_matrix)

__all__ = ["gram", "gram_matrix", "gram_mse", "moments", "STD_EPS"]
