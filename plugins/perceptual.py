"""Losses on extractor features: content (feature MSE), Gram-matrix style and AdaIN's moment style loss.

Terms never run the extractor: the engine asks `feature_layers(extractor)` once, then hands the features
in `ctx.feats`. Style terms get `prepare(style_feats, labels)` once per run and cache their targets as
non-persistent buffers (they follow `.to(device)` but are not saved in checkpoints). All arithmetic is
float32 with autocast off, so bfloat16 features are safe; the one bfloat16 operation is the Gram product of
bfloat16 features on the CPU, whose sums and result stay float32 (`_BF16Gram`; in the style loss
`_BF16GramMSE`, which also fuses the loss's backward into one product).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from stylezoo.core.errors import CompositionError, ConfigError, DataError
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import Extractor, StepContext

STD_EPS = 1e-5


def resolve_layers(owner: str, requested: tuple[str, ...], default_attr: str,
                   extractor: Extractor | None) -> tuple[str, ...]:
    """The layers a term reads: `requested`, or the extractor's `default_attr` when empty; checked."""
    if extractor is None:
        raise CompositionError(f"{owner} needs a feature extractor: add a feat/ component (e.g. feat/vgg16).")
    layers = tuple(requested) or tuple(getattr(extractor, default_attr))
    valid = tuple(extractor.layer_names)
    bad = [n for n in layers if n not in valid]
    if bad:
        raise ConfigError(f"{owner}: unknown layer(s) {', '.join(map(repr, bad))}; valid layers: {', '.join(valid)}.")
    if not layers:
        raise ConfigError(f"{owner}: no layers given and the extractor has no {default_attr}; "
                          f"pick from {', '.join(valid)}.")
    return layers


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


class _BF16Gram(torch.autograd.Function):
    """x x^T * scale of bfloat16 x (N, C, L) with a float32 result, on oneDNN's bfloat16 matmul.

    bfloat16 inputs lose nothing to the matmul's bfloat16 rounding, and the sums and the output stay
    float32: the same Gram as the float32 product up to summation order (about 1e-6 relative) at 2-2.5x
    its speed on a CPU with AVX512-BF16. A bfloat16 *output* would not do: the style loss subtracts two
    close Grams, and a bfloat16 product (about 3e-3 relative) trained portrait-painting visibly worse.
    The backward, (g + g^T) x * scale, is an ordinary bfloat16 product like any other under autocast.
    With `cl`, x is (N, L, C) and the Gram x^T x (see `_matrices`).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float, cl: bool = False) -> Tensor:
        ctx.save_for_backward(x)
        ctx.scale, ctx.cl = scale, cl
        xf = x.float()
        c = x.shape[2] if cl else x.shape[1]
        out = xf.new_empty(x.shape[0], c, c)
        a, b = (xf.transpose(1, 2), xf) if cl else (xf, xf.transpose(1, 2))
        with _bf16_fp32_matmul():
            return torch.baddbmm(out, a, b, beta=0.0, alpha=scale)

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
    g + g^T and a scaling: five passes over the (N, C, C) matrices, 25 ms of the original recipe's 64 px step
    for its two 512-channel layers. Here it is one bf16 cast of the residual d = G - t and one product:
    dx = (4 * scale / numel) d x, using that d is symmetric (G and the cached targets are Grams; oneDNN may
    sum G's mirror entries in another order, a float32 rounding far below d's bfloat16 cast).
    With `cl`, x is (N, L, C), the Gram x^T x and dx = (4 * scale / numel) x d (see `_matrices`).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, target: Tensor, scale: float, cl: bool = False) -> Tensor:
        xf = x.float()
        c = x.shape[2] if cl else x.shape[1]
        out = xf.new_empty(x.shape[0], c, c)
        a, b = (xf.transpose(1, 2), xf) if cl else (xf, xf.transpose(1, 2))
        with _bf16_fp32_matmul():
            d = torch.baddbmm(out, a, b, beta=0.0, alpha=scale)
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
        self.prev = torch.backends.mkldnn.matmul.fp32_precision
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"

    def __exit__(self, *exc: object) -> None:
        torch.backends.mkldnn.matmul.fp32_precision = self.prev


def moments(f: Tensor) -> tuple[Tensor, Tensor]:
    """Channel-wise mean and std over (h, w) of features (N, C, H, W) -> two (N, C), in float32."""
    with _fp32(f.device):
        x = f.float().flatten(2)
        return x.mean(2), (x.var(2, correction=0) + STD_EPS).sqrt()


def _label_means(x: Tensor, labels: Tensor | None) -> Tensor:
    """Mean of per-image statistics (S, ...): (1, ...) without labels, (L, ...) with labels 0..L-1."""
    if labels is None:
        return x.mean(0, keepdim=True)
    labels = labels.to(x.device).long().reshape(-1)
    if labels.numel() != x.shape[0]:
        raise DataError(f"got {labels.numel()} style labels for {x.shape[0]} style images; give one label per image.")
    n = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=n)
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().flatten().tolist()
        raise DataError(f"style labels {missing} have no style images; labels must be 0..{n - 1} with an image each.")
    sums = x.new_zeros((n, *x.shape[1:])).index_add_(0, labels, x)
    return sums / counts.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


class _FeatureTerm(nn.Module):
    """Shared plumbing: resolved layers and cached per-layer targets (one per label when labelled)."""

    step: ClassVar[str] = "gen"
    default_layers: ClassVar[str] = "style_layers"

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = cfg.weight
        self.layers: tuple[str, ...] = tuple(cfg.layers)
        self.labelled = False

    @property
    def owner(self) -> str:
        return getattr(self, "stylezoo_name", type(self).__name__)

    def feature_layers(self, extractor: Extractor | None) -> tuple[str, ...]:
        self.layers = resolve_layers(self.owner, self.cfg.layers, self.default_layers, extractor)
        return self.layers

    def _active_layers(self) -> tuple[str, ...]:
        if not self.layers:
            raise RuntimeError(f"{self.owner}: call feature_layers(extractor) before using the loss")
        return self.layers

    def _store(self, kind: str, i: int, value: Tensor) -> None:
        self.register_buffer(f"{kind}_{i}", value, persistent=False)

    def _target(self, kind: str, i: int, ctx: StepContext) -> Tensor:
        """The cached target for layer i, (1, ...) or gathered per sample by ctx.cond["label"] (N, ...)."""
        t = getattr(self, f"{kind}_{i}", None)
        if t is None:
            raise RuntimeError(f"{self.owner}: prepare(style_feats) was not called before training")
        if not self.labelled:
            return t
        label = ctx.cond.get("label")
        if label is None:
            raise RuntimeError(f"{self.owner}: style targets are per label but ctx.cond has no 'label'")
        return t[label.to(t.device).long()]

    def _style_inputs(self, style_feats: dict[str, Tensor], labels: Tensor | None) -> tuple[str, ...]:
        if not self.layers:
            self.layers = tuple(style_feats)
        missing = [n for n in self.layers if n not in style_feats]
        if missing:
            raise RuntimeError(f"{self.owner}: style features lack layer(s) {missing}")
        self.labelled = labels is not None
        return self.layers


@dataclass
class ContentConfig:
    layers: tuple[str, ...] = ()  # extractor layers; empty = the extractor's content_layers
    weight: float = 1.0
    against: Literal["content", "target"] = "content"  # "target": compare with the paired target instead

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if self.against not in ("content", "target"):
            raise ValueError(f"against must be 'content' or 'target', got {self.against!r}")


class Content(_FeatureTerm):
    """Sum over layers of the MSE between features of the output and of the content (or target) image.

    Per sample when the data is paired (`ctx.paired`, or `against="target"`). For noise generators the
    "content" images are a real batch unrelated to each fake, so a per-sample distance means nothing:
    then the batch means of the features are compared instead (feature matching, Salimans et al. 2016).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"feats_fake", "feats_content"})
    default_layers = "content_layers"

    def __init__(self, cfg: ContentConfig) -> None:
        super().__init__(cfg)
        if cfg.against == "target":
            self.needs = frozenset({"feats_fake", "feats_target"})  # type: ignore[misc]

    def forward(self, ctx: StepContext) -> Tensor:
        side = self.cfg.against
        if side not in ctx.feats:
            raise RuntimeError(f"{self.owner}: ctx.feats has no {side!r} features")
        per_sample = ctx.paired or side == "target"
        total = ctx.fake.new_zeros((), dtype=torch.float32)
        with _fp32(ctx.fake.device):
            for name in self._active_layers():
                a, b = ctx.feats["fake"][name].float(), ctx.feats[side][name].float()
                if not per_sample:
                    a, b = a.mean(0), b.mean(0)
                if a.shape != b.shape:
                    raise RuntimeError(f"{self.owner}: feature shapes differ at {name}: "
                                       f"{tuple(a.shape)} vs {tuple(b.shape)}")
                total = total + F.mse_loss(a, b.detach())
        return total


@dataclass
class GramConfig:
    layers: tuple[str, ...] = ()  # extractor layers; empty = the extractor's style_layers
    layer_weights: tuple[float, ...] = ()  # one per layer; empty = 1/len(layers) each
    # measured on the bundled images with feat/vgg16 (HED weights, Caffe 0..255 input), 64-256 px: Gram
    # loss content-vs-style ~30-75 against a relu4_2 content MSE of ~75-95 between unrelated photos, so
    # 10 lets style lead while content still counts. Gram scales as features^4 and content as features^2:
    # an extractor with ImageNet-normalised input (features ~45x smaller) needs ~2000x more (~2e4).
    weight: float = 10.0

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if any(w < 0 for w in self.layer_weights):
            raise ValueError(f"layer_weights must be >= 0, got {self.layer_weights}")
        if self.layers and self.layer_weights and len(self.layers) != len(self.layer_weights):
            raise ValueError(f"{len(self.layer_weights)} layer_weights for {len(self.layers)} layers")


class GramStyle(_FeatureTerm):
    """Gatys' style loss: sum_l w_l * MSE(gram(fake_l), target_l), gram(f) = f f^T / (c*h*w) per sample.

    The target is the mean Gram of the style images (one per label when `prepare` gets labels; then
    each sample is compared with the target of its `ctx.cond["label"]`). With this normalisation the
    Gram entries shrink fast with depth (on VGG16 relu4_1/relu5_1 add ~1e-4 of relu1_1/relu2_1), so equal
    layer weights are dominated by the shallow layers; raise deep layers with `layer_weights`.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"feats_fake", "style"})

    def feature_layers(self, extractor: Extractor | None) -> tuple[str, ...]:
        layers = super().feature_layers(extractor)
        self._layer_weights()
        return layers

    def _layer_weights(self) -> tuple[float, ...]:
        layers, weights = self._active_layers(), tuple(self.cfg.layer_weights)
        if weights and len(weights) != len(layers):
            raise ConfigError(f"{self.owner}: {len(weights)} layer_weights for {len(layers)} layers "
                              f"({', '.join(layers)}); give one weight per layer.")
        return weights or (1.0 / len(layers),) * len(layers)

    @torch.no_grad()
    def prepare(self, style_feats: dict[str, Tensor], labels: Tensor | None = None) -> None:
        for i, name in enumerate(self._style_inputs(style_feats, labels)):
            self._store("gram", i, _label_means(gram(style_feats[name]), labels))

    def forward(self, ctx: StepContext) -> Tensor:
        total = ctx.fake.new_zeros((), dtype=torch.float32)
        with _fp32(ctx.fake.device):
            for i, (name, w) in enumerate(zip(self._active_layers(), self._layer_weights())):
                total = total + w * gram_mse(ctx.feats["fake"][name], self._target("gram", i, ctx))
        return total


@dataclass
class MomentsConfig:
    layers: tuple[str, ...] = ()  # extractor layers; empty = the extractor's style_layers
    weight: float = 10.0  # AdaIN's style weight beside a content weight of 1 (same Caffe-scale VGG features)

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")


class MomentStyle(_FeatureTerm):
    """AdaIN's style loss: sum over layers of MSE(mean_c(fake), mean_c(style)) + MSE(std_c(fake), std_c(style)).

    Statistics are per channel over (h, w); std = sqrt(biased var + 1e-5). The style side is, in order:
    `ctx.cond["style_feats"]` ({layer: (N, C, H, W)}, each sample's own reference style, for
    reference-guided generators), else the cached per-label target, else the cached mean target.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"feats_fake", "style"})

    @torch.no_grad()
    def prepare(self, style_feats: dict[str, Tensor], labels: Tensor | None = None) -> None:
        for i, name in enumerate(self._style_inputs(style_feats, labels)):
            mean, std = moments(style_feats[name])
            self._store("mean", i, _label_means(mean, labels))
            self._store("std", i, _label_means(std, labels))

    def forward(self, ctx: StepContext) -> Tensor:
        own = ctx.cond.get("style_feats")
        total = ctx.fake.new_zeros((), dtype=torch.float32)
        with _fp32(ctx.fake.device):
            for i, name in enumerate(self._active_layers()):
                mean, std = moments(ctx.feats["fake"][name])
                if own is not None:
                    t_mean, t_std = (t.detach() for t in moments(own[name]))
                else:
                    t_mean, t_std = self._target("mean", i, ctx), self._target("std", i, ctx)
                total = total + F.mse_loss(mean, t_mean.expand_as(mean)) + F.mse_loss(std, t_std.expand_as(std))
        return total


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("loss/content", Content, config=ContentConfig)
    register("loss/gram", GramStyle, config=GramConfig)
    register("loss/moments", MomentStyle, config=MomentsConfig)
