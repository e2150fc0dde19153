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

from stylezoo.core.components.base import check_weight, resolve_layers  # noqa: F401  (resolve_layers: its old import path)
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import Extractor, StepContext
from stylezoo.core.errors import ConfigError, DataError
from stylezoo.core.ops.stats import STD_EPS, _fp32, gram, gram_mse, moments  # noqa: F401  (gram: its old import path)


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
    # "target": each layer's MSE is divided by the mean square of the features it is compared with, so every
    # layer counts alike whatever its feature scale (VGG16's Caffe-scale features grow with depth); "none": plain
    normalize: Literal["none", "target"] = "none"

    def __post_init__(self) -> None:
        check_weight(self.weight)
        if self.against not in ("content", "target"):
            raise ValueError(f"against must be 'content' or 'target', got {self.against!r}")
        if self.normalize not in ("none", "target"):
            raise ValueError(f"normalize must be 'none' or 'target', got {self.normalize!r}")


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
                d = F.mse_loss(a, b.detach())
                if self.cfg.normalize == "target":
                    d = d / b.detach().pow(2).mean().clamp_min(1e-12)
                total = total + d
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
    # "target": each layer's term is divided by the mean square of its target Gram, so every layer counts
    # alike whatever its feature scale (a relative distance, as the evaluator's style_gram); "none": the plain
    # mean squared Gram difference (Gatys et al.), where the shallow layers' large Grams dominate
    normalize: Literal["none", "target"] = "none"

    def __post_init__(self) -> None:
        check_weight(self.weight)
        if self.normalize not in ("none", "target"):
            raise ValueError(f"normalize must be 'none' or 'target', got {self.normalize!r}")
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
                target = self._target("gram", i, ctx)
                term = gram_mse(ctx.feats["fake"][name], target)
                if self.cfg.normalize == "target":
                    term = term / target.float().square().mean().clamp_min(1e-12)
                total = total + w * term
        return total


@dataclass
class MomentsConfig:
    layers: tuple[str, ...] = ()  # extractor layers; empty = the extractor's style_layers
    weight: float = 10.0  # AdaIN's style weight beside a content weight of 1 (same Caffe-scale VGG features)

    def __post_init__(self) -> None:
        check_weight(self.weight)


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
