"""Quality metrics for generated images: style, content, distribution distance and paired distances.

What is written here by hand is mostly what no library has: Gram and feature distances on the project's own
extractors (core/components/kinds.py Extractor). FID and KID are torchmetrics'; SSIM is torchmetrics' formula
and window, filtered by matrix products (`ssim`: faster on the CPU). Every function takes images in [-1, 1]
(the project's convention) or features, and returns one value per image where that makes sense.

FID and KID are computed on EfficientNet-Lite0's pooled 1280-d features, not Inception's, so they are
named `fid_effl0`/`kid_effl0` and are not comparable with published Inception FIDs.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError, did_you_mean
from .ranges import to_unit
from .stats import gram

Direction = Literal["min", "max"]


@dataclass(frozen=True)
class Metric:
    """What a metric measures and which way is better (`None`: not a quality measure, e.g. a spread)."""

    direction: Direction | None
    description: str


# One table for every metric's meaning and direction; `best.safetensors` and the report read it.
METRICS: dict[str, Metric] = {
    "style_gram": Metric("min", "Gram-matrix distance to the style image(s), VGG16 style layers (relative, 0 = same)"),
    "content_feat": Metric("min", "feature distance to the input on the VGG16 content layer (relative, 0 = same)"),
    "content_ssim": Metric("max", "SSIM of the output's luminance to the input's (1 = same structure)"),
    "fid_effl0": Metric("min", "Frechet distance to the style domain / real data, EfficientNet-Lite0 pooled features"),
    "kid_effl0": Metric("min", "kernel (MMD^2) distance, same features; unbiased, may dip below 0 on small sets"),
    "kid_effl0_std": Metric(None, "standard deviation of kid_effl0 over random subsets"),
    "ref_ssim": Metric("max", "SSIM of the output's luminance to the paired reference's"),
    "ref_l1": Metric("min", "mean absolute pixel difference to the paired reference (RGB in [0, 1])"),
    "ref_perceptual": Metric("min", "perceptual distance to the paired reference (VGG16, unit-normalised channels)"),
}
# The taps LPIPS reads on VGG16; extractors without them fall back to their style layers.
PERCEPTUAL_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
EPS = 1e-8


def check_metric(name: str) -> Metric:
    """The table entry of a metric that can rank checkpoints, or UsageError naming the valid ones."""
    ok = [k for k, m in METRICS.items() if m.direction is not None]
    if name not in ok:
        raise UsageError(f"Unknown eval metric {name!r}.{did_you_mean(name, ok)} Choose one of: {', '.join(ok)}.")
    return METRICS[name]


def better(name: str, new: float, old: float | None) -> bool:
    """True if `new` improves on `old` for metric `name` (any finite value beats None)."""
    if not math.isfinite(new):
        return False
    if old is None or not math.isfinite(old):
        return True
    return new < old if check_metric(name).direction == "min" else new > old


# -- hand-written distances on the project's extractors -------------------------------------------------------
def gram_targets(style_feats: Mapping[str, Tensor], weights: Tensor | None = None) -> dict[str, Tensor]:
    """The mean Gram matrix (1, C, C) of the style images at each layer, as the Gram loss uses it; with
    `weights` (N,), their weighted sum instead."""
    if weights is None:
        return {k: gram(v).mean(0, keepdim=True) for k, v in style_feats.items()}
    return {k: (gram(v) * weights.to(v.device, torch.float32).view(-1, 1, 1)).sum(0, keepdim=True)
            for k, v in style_feats.items()}


def gram_distance(feats: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
    """Per image (N,): ||G(x) - G_style||_F / ||G_style||_F at each layer, averaged over the layers."""
    per_layer = []
    for name, t in targets.items():
        g = gram(feats[name])
        t = t.float().to(g.device)
        per_layer.append((g - t).flatten(1).norm(dim=1) / (t.flatten(1).norm(dim=1) + EPS))
    return torch.stack(per_layer).mean(0)


def feature_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """Per image (N,): ||f(a) - f(b)||_2 / ||f(b)||_2 at each layer of `b`, averaged over the layers."""
    per_layer = []
    for name, fb in b.items():
        fa, fb = a[name].float().flatten(1), fb.float().flatten(1)
        per_layer.append((fa - fb).norm(dim=1) / (fb.norm(dim=1) + EPS))
    return torch.stack(per_layer).mean(0)


# float32 elements per feature map normalised at a time in `perceptual_distance` (8 MiB): slices of rows
# stay in cache, where whole float32 copies of bfloat16 maps went through memory several times
SLICE_ELEMENTS = 1 << 21


def perceptual_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """Per image (N,): LPIPS' distance without its learned weights (channels unit-normalised, squared
    difference summed over channels, averaged over positions), averaged over the layers of `b`.

    Computed in float32 a slice of rows at a time, in two reused buffers (the features' own layout)."""
    per_layer = []
    for name, fb in b.items():
        fa = a[name]
        n, c, h, w = fb.shape
        rows = min(h, max(1, SLICE_ELEMENTS // max(1, n * c * w)))
        fmt = (torch.channels_last if not fb.is_contiguous() and fb.is_contiguous(memory_format=torch.channels_last)
               else torch.contiguous_format)
        bufs = [torch.empty(n, c, rows, w, device=fb.device, memory_format=fmt) for _ in range(2)]
        total = torch.zeros(n, device=fb.device)
        for r in range(0, h, rows):
            k = min(rows, h - r)
            na, nb = (buf[:, :, :k].copy_(f[:, :, r:r + k]) for buf, f in zip(bufs, (fa, fb)))
            for x in (na, nb):
                x.div_(torch.linalg.vector_norm(x, dim=1, keepdim=True).add_(EPS))
            total += na.sub_(nb).square_().sum(1).sum((1, 2))
        per_layer.append(total / (h * w))
    return torch.stack(per_layer).mean(0)


# -- pixel measures ------------------------------------------------------------------------------------------
def luminance(x: Tensor) -> Tensor:
    """(N, 3, H, W) in [-1, 1] to ITU-R BT.601 luma (N, 1, H, W) in [0, 1]."""
    u = to_unit(x.float())
    w = torch.tensor([0.299, 0.587, 0.114], device=u.device).reshape(1, 3, 1, 1)
    return (u * w).sum(1, keepdim=True)


SSIM_MIN_SIDE = 6  # the window's radius (5) is reflect-padded, and must stay under the side
SSIM_SIGMA, SSIM_K1, SSIM_K2 = 1.5, 0.01, 0.03  # torchmetrics' defaults


def _gauss_band(n: int, like: Tensor) -> Tensor:
    """(n, n - 10): column j holds torchmetrics' 11-tap Gaussian (sigma 1.5) at rows j..j+10, so `x @ band`
    filters the rows of x as a valid 1-D convolution. Its 11x11 window is the outer product of that kernel,
    so the two products (rows, then columns) apply the same window."""
    ks = int(3.5 * SSIM_SIGMA + 0.5) * 2 + 1
    dist = torch.arange(start=(1 - ks) / 2, end=(1 + ks) / 2, step=1, dtype=like.dtype, device=like.device)
    g = torch.exp(-torch.pow(dist / SSIM_SIGMA, 2) / 2)
    g = g / g.sum()
    band = like.new_zeros(n, n - ks + 1)
    j = torch.arange(n - ks + 1, device=like.device)
    for k in range(ks):
        band[j + k, j] = g[k]
    return band


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per image (N,): torchmetrics' SSIM (Gaussian 11x11, sigma 1.5, reflect-padded so borders count, data range
    1) between the luminances of a and b, computed in float32 whatever autocast is on.

    Its formula, with the Gaussian window applied as two matrix products instead of torchmetrics' 11x11
    convolution: the same values to float32 rounding (tests/test_metrics.py compares them), 5x faster on the
    CPU, where a one-channel convolution is slow (docs/benchmarks.md). Differentiable (loss/ssim)."""
    if a.shape != b.shape:
        raise UsageError(f"SSIM needs images of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    if min(a.shape[-2:]) < SSIM_MIN_SIDE:
        raise UsageError(f"SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} px (its 11x11 window is "
                         f"reflect-padded by 5 px), got {tuple(a.shape[-2:])}; score at a larger --size.")
    dev = a.device.type
    off = torch.autocast(dev, enabled=False) if dev in ("cpu", "cuda") else contextlib.nullcontext()
    with off:  # under bf16 autocast the products would round the local means and variances
        la, lb = (F.pad(luminance(x), (5, 5, 5, 5), mode="reflect") for x in (a, b))
        x = torch.cat((la, lb, la * la, lb * lb, la * lb))[:, 0]  # (5N, H + 10, W + 10)
        x = _gauss_band(x.shape[1], x).t() @ (x @ _gauss_band(x.shape[2], x))
        mu_a, mu_b, e_aa, e_bb, e_ab = x.split(a.shape[0])
        c1, c2 = SSIM_K1**2, SSIM_K2**2
        mu_aa, mu_bb, mu_ab = mu_a.pow(2), mu_b.pow(2), mu_a * mu_b
        var_a, var_b = torch.clamp(e_aa - mu_aa, min=0.0), torch.clamp(e_bb - mu_bb, min=0.0)
        upper = 2 * (e_ab - mu_ab) + c2
        lower = var_a + var_b + c2
        full = ((2 * mu_ab + c1) * upper) / ((mu_aa + mu_bb + c1) * lower)
    return full.reshape(full.shape[0], -1).mean(-1)


def l1(a: Tensor, b: Tensor) -> Tensor:
    """Per image (N,): mean absolute difference of RGB in [0, 1]."""
    return (to_unit(a.float()) - to_unit(b.float())).abs().flatten(1).mean(1)


# -- distribution distances (torchmetrics FID/KID on precomputed features) ------------------------------------
class _Features(nn.Module):
    """The feature module handed to torchmetrics: features are computed once beforehand (they feed both FID
    and KID), so this only projects them (FID) or passes them on (KID). torchmetrics passes a custom
    module's input through unchanged whatever `normalize` says; `num_features` spares its dummy forward."""

    def __init__(self, num_features: int, basis: Tensor | None = None) -> None:
        super().__init__()
        self.num_features = num_features
        self.basis = basis

    def forward(self, x: Tensor) -> Tensor:
        x = x.double()
        return x if self.basis is None else x @ self.basis


def kid_subset_size(n_real: int, n_fake: int) -> int:
    """KID's subset size for small sets: half the smaller set (so subsets differ and the std means something),
    the whole set below 4 images, at most torchmetrics' default of 1000."""
    n = min(n_real, n_fake)
    return min(1000, n if n < 4 else n // 2)


def fid_kid(real: Tensor, fake: Tensor, *, subsets: int = 100, seed: int = 0) -> dict[str, float]:
    """FID and KID (mean and std over subsets) between two feature sets (N, D), via torchmetrics.

    FID only depends on the features through their means and covariances, and is unchanged by an orthonormal
    change of basis. With fewer samples than dimensions (the usual case here) the features are first
    expressed in an orthonormal basis of the space they span: the same FID, without a D x D eigenproblem.
    KID is computed on the raw features with gamma = 1/D, as standard. Sets need at least 2 samples each.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = real.detach().double().cpu(), fake.detach().double().cpu()
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise UsageError(f"FID/KID need at least 2 images on each side, got {real.shape[0]} and {fake.shape[0]}.")
    d = real.shape[1]
    basis = None
    if real.shape[0] + fake.shape[0] < d:
        # (D, k) orthonormal columns whose span holds every feature vector (a dependent column only adds
        # an unused orthonormal direction, which changes nothing)
        basis = torch.linalg.qr(torch.cat([real, fake]).T).Q
    fid = FrechetInceptionDistance(feature=_Features(d if basis is None else basis.shape[1], basis))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    size = kid_subset_size(real.shape[0], fake.shape[0])
    with warnings.catch_warnings():  # "KID keeps all features in memory": they are few here
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Features(d), subsets=subsets, subset_size=size, gamma=1.0 / d)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws subsets from the global RNG: keep it reproducible
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid_effl0": float(fid.compute()), "kid_effl0": float(kid_mean), "kid_effl0_std": float(kid_std)}


__all__ = ["METRICS", "Metric", "PERCEPTUAL_LAYERS", "check_metric", "better", "gram_targets", "gram_distance",
           "feature_distance", "perceptual_distance", "luminance", "ssim", "l1", "kid_subset_size", "fid_kid"]
