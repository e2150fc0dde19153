"""Arbitrary style transfer with adaptive instance normalisation (Huang and Belongie 2017, arXiv:1703.06868).

`gen/adain`: a frozen pretrained encoder (VGG up to relu4_1), AdaIN of the content features to the channel
means and standard deviations of the style features, and a trained decoder that mirrors the encoder
(nearest upsampling where the encoder pools, reflection-padded 3x3 convs, tanh out). It takes any content
image and any reference style image: `gen(content, style=ref)`. `loss/adain-content` is its content loss:
the output's encoder features against the AdaIN target t, which the generator exposes in training mode as
`last_target` and the engine hands to the loss as `ctx.cond["adain_target"]`.

Checkpoints: the encoder's tensors are left out of the state dict when its weights are a named, verified
weight set (they are rebuilt from it by name, saving ~12 MB per checkpoint); random or file weights are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stylezoo.core.components.base import check_weight
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import Extractor, StepContext
from stylezoo.core.errors import CompositionError, ConfigError
from stylezoo.core.ops.layers import ReflectionPad2d, Upsample

EPS = 1e-5


def channel_stats(f: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std over (h, w) of (N, C, h, w) features: two (N, C) float32 tensors.

    std = sqrt(biased variance + eps), the same statistics loss/moments compares.
    """
    x = f.float().flatten(2)
    mean = x.mean(2)
    var = (x - mean[..., None]).pow(2).mean(2)
    return mean, (var + eps).sqrt()


def adain(content: Tensor, mean: Tensor, std: Tensor, eps: float = EPS) -> Tensor:
    """Content features (N, C, h, w) renormalised to target channel `mean` and `std` ((N or 1, C))."""
    c_mean, c_std = channel_stats(content, eps)
    x = content.float()
    return (x - c_mean[..., None, None]) / c_std[..., None, None] * std[..., None, None] + mean[..., None, None]


def mix(mean: Tensor, std: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Interpolate K styles' statistics (K, C) with weights (K,) or (N, K): (1, C) or (N, C).

    Weights are normalised to sum to 1; mixing the statistics linearly equals mixing the AdaIN outputs.
    """
    w = weights.float().to(mean.device)
    w = w.reshape(1, -1) if w.dim() == 1 else w
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    return w @ mean, w @ std


@dataclass
class AdaINConfig:
    encoder: str = "feat/vgg16"  # the frozen encoder, built through the registry (a VGG-style extractor)
    layer: str = "relu4_1"  # the encoder layer AdaIN works at; the decoder mirrors the encoder up to it
    weights: str = "default"  # the encoder's weights (passed to it): "default", a weight set, a path or "random"

    def __post_init__(self) -> None:
        for name in ("encoder", "layer", "weights"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"{name} must not be empty")
        if not self.encoder.startswith("feat/"):
            raise ValueError(f"encoder must be a feature extractor name (feat/...), got {self.encoder!r}")


def _reflect_conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3)]


def mirror_decoder(features: nn.Sequential, upto: int) -> tuple[nn.Sequential, int]:
    """The decoder mirroring VGG `features[: upto + 1]`, and the encoder's total downsampling factor.

    Each encoder conv (a -> b) becomes a reflect-padded conv (b -> a) with ReLU (none after the last, which
    gives RGB), each max-pool a x2 nearest upsampling, in reverse order.
    """
    mods: list[nn.Module] = []
    factor = 1
    convs = 0
    for m in reversed(list(features)[: upto + 1]):
        if isinstance(m, nn.Conv2d):
            convs += 1
            mods += _reflect_conv(m.out_channels, m.in_channels)
            mods.append(nn.ReLU())
        elif isinstance(m, nn.MaxPool2d):
            mods.append(Upsample(scale_factor=2, mode="nearest"))
            factor *= 2
        elif not isinstance(m, nn.ReLU):
            raise ConfigError("gen/adain mirrors VGG-style encoders (convs, ReLUs, max-pools); "
                              f"found {type(m).__name__}.")
    if not convs:
        raise ConfigError("gen/adain: the encoder has no conv up to the chosen layer.")
    mods.pop()  # no ReLU after the RGB conv
    return nn.Sequential(*mods), factor


def frozen_vgg_encoder(encoder: str, weights: str, owner: str) -> tuple[Extractor, tuple[str, str]]:
    """A VGG-style extractor built through the registry for a generator to encode with (frozen, its weights
    passed on), and its (name, weights) id; a ConfigError naming `owner` for any other kind of extractor."""
    from stylezoo.core.components.registry import default_registry

    reg = default_registry()
    entry = reg.get(encoder, "feat")
    fields = {f for f in entry.config.__dataclass_fields__}
    enc = reg.build(entry.name, {"weights": weights} if "weights" in fields else {})
    feats = getattr(enc, "features", None)
    if not isinstance(feats, nn.Sequential) or len(feats) != len(tuple(getattr(enc, "layer_names", ()))):
        raise ConfigError(f"{owner} needs a VGG-style encoder (feat/vgg16, feat/vgg19), not {entry.name}.")
    return enc, (entry.name, str(getattr(enc, "weights", "")))


class AdaINGenerator(nn.Module):
    """Content image (N, 3, H, W) + reference style image(s) -> stylised image (N, 3, H, W) in [-1, 1].

    `forward(content, style=None, alpha=1.0, style_weights=None, style_stats=None)`:
    - `style`: (S, 3, h, w) or a list of (3, h, w)/(1, 3, h, w) images of any sizes. Without weights S is 1
      (one reference for every content image) or N (one each). With `style_weights` ((S,) or (N, S)) the
      S references' statistics are interpolated, as Huang and Belongie's style interpolation.
    - `alpha` (float or tensor): t = alpha * AdaIN(f(c), f(s)) + (1 - alpha) * f(c); 0 decodes the content.
    - `style_stats`: precomputed target (mean, std), each (1 or N, C), instead of `style` (see `style_stats()`).
    - no style: the default style (mean statistics of the training style set, set by the engine through
      `set_default_style` and kept in the checkpoint), or before that the content's own statistics.
    Input sides must be multiples of `size_multiple` (the encoder's downsampling, 8 at relu4_1).
    """

    family: ClassVar[str] = "image"
    needs_style: ClassVar[bool] = True  # the engine passes a batch of style images as `style=`
    # inputs an exported model takes besides the content image, and what they hold (core/use/export.py)
    export_conditions: ClassVar[tuple[tuple[str, str], ...]] = (
        ("style", "images"), ("style_weights", "weights"), ("alpha", "scalar"))

    def __init__(self, cfg: AdaINConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc, self.encoder_id = frozen_vgg_encoder(cfg.encoder, cfg.weights, "gen/adain")
        names, feats = tuple(enc.layer_names), cast(nn.Sequential, getattr(enc, "features"))
        if cfg.layer not in names:
            raise ConfigError(f"gen/adain: {self.encoder_id[0]} has no layer {cfg.layer!r}; layers: "
                              f"{', '.join(names)}.")
        self.encoder: Extractor = enc
        self.decoder, self.size_multiple = mirror_decoder(feats, names.index(cfg.layer))
        channels = next(m.out_channels for m in reversed(list(feats)[: names.index(cfg.layer) + 1])
                        if isinstance(m, nn.Conv2d))
        self.register_buffer("default_mean", torch.zeros(channels))
        self.register_buffer("default_std", torch.zeros(channels))  # all zero: no default style yet
        self.last_target: Tensor | None = None
        w = self.encoder_id[1]
        self.keep_encoder = w == "random" or w.startswith("file:")
        if not self.keep_encoder:
            self.register_state_dict_post_hook(_drop_encoder)
            self.register_load_state_dict_post_hook(_encoder_not_missing)

    def train(self, mode: bool = True) -> AdaINGenerator:
        super().train(mode)
        self.encoder.eval()  # frozen, always in eval mode
        return self

    # -- features and statistics -------------------------------------------------------------------------------
    def encode(self, image: Tensor) -> Tensor:
        """Encoder features at `cfg.layer` (no gradient to the encoder's weights; they are frozen)."""
        return self.encoder(image, (self.cfg.layer,))[self.cfg.layer]

    def style_stats(self, style: Tensor | Sequence[Tensor], style_weights: Tensor | Sequence[float] | None = None
                    ) -> tuple[Tensor, Tensor]:
        """Target (mean, std) of reference image(s): (S, C) each, or mixed by `style_weights` to (1 or N, C)."""
        if isinstance(style, Tensor) and style.dim() == 4:
            mean, std = channel_stats(self.encode(style))
        else:
            items = [s if s.dim() == 4 else s[None] for s in style]
            if not items:
                raise ValueError("gen/adain: got an empty list of style images")
            pairs = [channel_stats(self.encode(s)) for s in items]
            mean, std = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        if style_weights is None:
            return mean, std
        if not isinstance(style_weights, Tensor):
            ws = [float(w) for w in style_weights]
            if any(w < 0 for w in ws) or not sum(ws) > 0:
                raise ValueError(f"gen/adain: style weights must be >= 0 with a positive sum, got {ws}")
            style_weights = torch.tensor(ws)
        if style_weights.shape[-1] != mean.shape[0]:
            raise ValueError(f"gen/adain: {style_weights.shape[-1]} style weights for {mean.shape[0]} style images")
        return mix(mean, std, style_weights)

    @torch.no_grad()
    def set_default_style(self, images: Tensor, batch: int = 4) -> None:
        """Keep the mean statistics of `images` (the training style set) as the style used when none is given."""
        means, stds = zip(*(channel_stats(self.encode(x)) for x in images.split(batch)))
        self.default_mean.copy_(torch.cat(means).mean(0))
        self.default_std.copy_(torch.cat(stds).mean(0))

    def has_default_style(self) -> bool:
        return bool(self.default_std.abs().sum() > 0)

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, style: Tensor | Sequence[Tensor] | None = None, alpha: float | Tensor = 1.0,
                style_weights: Tensor | Sequence[float] | None = None,
                style_stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
        f = self.encode(x)
        if style_stats is not None:
            mean, std = style_stats
        elif style is not None:
            mean, std = self.style_stats(style, style_weights)
        else:  # the default style once set, else the content's own statistics (a select, not a branch: exportable)
            own_mean, own_std = channel_stats(f)
            have = self.default_std.abs().sum() > 0
            mean = torch.where(have, self.default_mean[None].float(), own_mean)
            std = torch.where(have, self.default_std[None].float(), own_std)
        if mean.shape[0] not in (1, f.shape[0]):
            raise ValueError(f"gen/adain: {mean.shape[0]} style targets for {f.shape[0]} content images; give 1, "
                             f"{f.shape[0]}, or style_weights to mix them")
        t = adain(f, mean.to(f.device), std.to(f.device))
        if isinstance(alpha, Tensor) or alpha != 1.0:
            t = alpha * t + (1 - alpha) * f.float()
        if self.training:
            self.last_target = t.detach()  # the content loss's target (loss/adain-content)
        return torch.tanh(self.decoder(t.to(f.dtype)))


def _drop_encoder(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for k in [k for k in state if k.startswith(prefix + "encoder.")]:
        del state[k]


def _encoder_not_missing(module: nn.Module, incompatible: Any) -> None:
    keep = [k for k in incompatible.missing_keys if not ("." + k).count(".encoder.")]
    incompatible.missing_keys[:] = keep


# ---------------------------------------------------------------------------------------------- the content loss
@dataclass
class AdaINContentConfig:
    layer: str = "relu4_1"  # extractor layer compared with the AdaIN target: the generator's `layer`
    weight: float = 1.0  # Huang and Belongie: content 1 beside a moment style loss of ~10

    def __post_init__(self) -> None:
        check_weight(self.weight)
        if not self.layer.strip():
            raise ValueError("layer must not be empty")


class AdaINContent(nn.Module):
    """MSE between the output's extractor features at `layer` and the AdaIN target t (ctx.cond["adain_target"]).

    The run's extractor must be the generator's encoder (same network and weights; the engine checks it).
    """

    step: ClassVar[str] = "gen"
    needs: ClassVar[frozenset[str]] = frozenset({"feats_fake"})
    cond_needs: ClassVar[frozenset[str]] = frozenset({"adain_target"})  # read from ctx.cond

    def __init__(self, cfg: AdaINContentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = cfg.weight

    def feature_layers(self, extractor: Extractor | None) -> tuple[str, ...]:
        if extractor is None:
            raise CompositionError("loss/adain-content needs a feature extractor: add --feat vgg16.")
        if self.cfg.layer not in extractor.layer_names:
            raise ConfigError(f"loss/adain-content: unknown layer {self.cfg.layer!r}; valid layers: "
                              f"{', '.join(extractor.layer_names)}.")
        return (self.cfg.layer,)

    def forward(self, ctx: StepContext) -> Tensor:
        target = ctx.cond.get("adain_target")
        if target is None:
            raise CompositionError("loss/adain-content compares with the AdaIN target, which only a reference-guided "
                                   "generator provides: use --gen adain.")
        fake = ctx.feats["fake"][self.cfg.layer].float()
        if fake.shape != target.shape:
            raise CompositionError(f"loss/adain-content: extractor features {tuple(fake.shape)} at {self.cfg.layer} "
                                   f"do not match the AdaIN target {tuple(target.shape)}; use the generator's "
                                   "encoder and layer as the run's extractor.")
        with torch.autocast(device_type=fake.device.type, enabled=False):
            return F.mse_loss(fake, target.detach().float())


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("gen/adain", AdaINGenerator, config=AdaINConfig, family="image")
    register("loss/adain-content", AdaINContent, config=AdaINContentConfig)
