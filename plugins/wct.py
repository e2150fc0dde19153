"""Universal style transfer with whitening and colouring transforms (Li et al. 2017, arXiv:1705.08086).

`gen/wct`: a frozen pretrained encoder (VGG) and one decoder per layer, coarse to fine (relu4_1, relu3_1,
relu2_1, relu1_1 by default). At each layer the image is encoded, its features are whitened (their covariance
made the identity) and coloured with the reference style's covariance and mean, and the layer's decoder turns
them back into an image, which the next, finer layer takes. The decoders are trained only to reconstruct
images (the cascade with no transform must give its input back), so no style is learned: any painting works
at inference, including ones never seen, and matching second-order statistics at every layer is what the
Gram-based style losses and metrics measure.

In training mode `gen(x)` reconstructs image k of the batch from layer k mod L alone (each decoder learns
on its own, as Li et al. train them; a batch of at least L images reaches every decoder); the recipe `wct`
trains them with `loss/content` over the four layers and `loss/identity` (pixels). Trained as one cascade
instead (the output of each decoder fed to the next layer), the decoders co-adapted: the reconstruction
loss fell but the stylised samples lost the content entirely (500 steps, 128 px).
In eval mode `gen(x, style=ref)` stylises, `alpha` blends each layer's transformed and own features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
from torch import Tensor, nn

from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import Extractor
from stylezoo.core.errors import ConfigError
from stylezoo.plugins.adain import _drop_encoder, _encoder_not_missing, frozen_vgg_encoder, mirror_decoder

Stats = tuple[tuple[Tensor, Tensor], ...]  # per layer: mean (S, C) and covariance (S, C, C), float64


@dataclass
class WCTConfig:
    encoder: str = "feat/vgg16"  # the frozen encoder, built through the registry (a VGG-style extractor)
    weights: str = "default"  # the encoder's weights (passed to it): "default", a weight set, a path or "random"
    layers: tuple[str, ...] = ("relu4_1", "relu3_1", "relu2_1", "relu1_1")  # coarse to fine; a decoder each
    eps: float = 1e-5  # eigenvalues of a covariance below this are dropped (whitening) or clipped (colouring)

    def __post_init__(self) -> None:
        for name in ("encoder", "weights"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"{name} must not be empty")
        if not self.encoder.startswith("feat/"):
            raise ValueError(f"encoder must be a feature extractor name (feat/...), got {self.encoder!r}")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be one or more distinct encoder layers, got {list(self.layers)}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")


def feature_stats(f: Tensor) -> tuple[Tensor, Tensor]:
    """Channel mean (N, C) and covariance (N, C, C) over (h, w) of (N, C, h, w) features, in float64."""
    v = f.double().flatten(2)
    mean = v.mean(2)
    v = v - mean[..., None]
    return mean, v @ v.transpose(1, 2) / max(v.shape[2] - 1, 1)


def wct(f: Tensor, mean: Tensor, cov: Tensor, eps: float = 1e-5) -> Tensor:
    """Features (N, C, h, w) whitened, then coloured to a target `mean` ((1 or N), C) and `cov` ((1 or N), C, C).

    Whitening drops the directions whose variance is below `eps` (dead ReLU channels). The C x C transforms
    are made in float64 (eigendecompositions); the products over h x w pixels run in float32.
    """
    n, c, h, w = f.shape
    v = f.float().flatten(2)
    v = v - v.mean(2, keepdim=True)
    e, vec = torch.linalg.eigh((v @ v.transpose(1, 2)).double() / max(h * w - 1, 1))
    inv_sqrt = torch.where(e > eps, e.clamp_min(eps).rsqrt(), torch.zeros_like(e))
    es, vs = torch.linalg.eigh(cov.double().to(f.device))
    colour = vs @ (es.clamp_min(0).sqrt()[..., None] * vs.transpose(1, 2))
    transform = colour @ vec @ (inv_sqrt[..., None] * vec.transpose(1, 2))  # colour . whiten: one C x C matrix
    out = transform.float() @ v + mean.float().to(f.device)[..., None]
    return out.reshape(n, c, h, w)


class WCTGenerator(nn.Module):
    """Content image (N, 3, H, W) + reference style image(s) -> stylised image (N, 3, H, W) in [-1, 1].

    `forward(content, style=None, alpha=1.0, style_weights=None, style_stats=None)` as gen/adain's: `style`
    (S, 3, h, w) or a list of images (S = 1 or N), `style_weights` ((S,) or (N, S)) mixes the references'
    statistics, `style_stats` is precomputed (`style_stats()`); without a style, the default style (the mean
    statistics of the training style set) or, before one is set, the content's own (a reconstruction).
    In training mode image k is reconstructed from layer k mod L (no transform): the decoders train in turn.
    Input sides must be multiples of `size_multiple` (the coarsest layer's downsampling).
    """

    family: ClassVar[str] = "image"
    needs_style: ClassVar[bool] = True  # the engine draws style images (sample grids, the default style)
    trains_in_turn: ClassVar[bool] = True  # a batch smaller than the number of layers leaves some decoders idle
    not_exportable: ClassVar[str] = "its covariance eigendecompositions (torch.linalg.eigh) have no ONNX operator"

    def __init__(self, cfg: WCTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc, self.encoder_id = frozen_vgg_encoder(cfg.encoder, cfg.weights, "gen/wct")
        names, feats = tuple(enc.layer_names), cast(nn.Sequential, getattr(enc, "features"))
        bad = [n for n in cfg.layers if n not in names]
        if bad:
            raise ConfigError(f"gen/wct: {self.encoder_id[0]} has no layer {bad[0]!r}; layers: {', '.join(names)}.")
        self.encoder: Extractor = enc
        self.decoders = nn.ModuleList()
        self.size_multiple = 1
        widths = []
        for layer in cfg.layers:
            dec, factor = mirror_decoder(feats, names.index(layer))
            self.decoders.append(dec)
            self.size_multiple = max(self.size_multiple, factor)
            widths.append(next(m.out_channels for m in reversed(list(feats)[: names.index(layer) + 1])
                               if isinstance(m, nn.Conv2d)))
        # each layer's features are divided by a fixed scale before its decoder (VGG's Caffe-scale features
        # are in the hundreds); set from the first training batch, 0 until then (then 1 is used)
        self.register_buffer("scales", torch.zeros(len(cfg.layers)))
        for i, c in enumerate(widths):  # the default style: mean statistics of the training style images
            self.register_buffer(f"default_mean_{i}", torch.zeros(c))
            self.register_buffer(f"default_cov_{i}", torch.zeros(c, c))
        w = self.encoder_id[1]
        if not (w == "random" or w.startswith("file:")):  # a named weight set: rebuilt, not stored
            self.register_state_dict_post_hook(_drop_encoder)
            self.register_load_state_dict_post_hook(_encoder_not_missing)

    def train(self, mode: bool = True) -> WCTGenerator:
        super().train(mode)
        self.encoder.eval()  # frozen, always in eval mode
        return self

    # -- statistics --------------------------------------------------------------------------------------------
    def _encode(self, image: Tensor, layer: str) -> Tensor:
        return self.encoder(image, (layer,))[layer]

    def style_stats(self, style: Tensor | Sequence[Tensor], style_weights: Tensor | Sequence[float] | None = None
                    ) -> Stats:
        """Per layer, the reference(s)' feature mean (S, C) and covariance (S, C, C), or their `style_weights` mix."""
        items = [style] if isinstance(style, Tensor) and style.dim() == 4 else [s if s.dim() == 4 else s[None]
                                                                                for s in style]
        if not items:
            raise ValueError("gen/wct: got an empty list of style images")
        per_layer = []
        for layer in self.cfg.layers:
            pairs = [feature_stats(self._encode(s, layer)) for s in items]
            per_layer.append((torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])))
        if style_weights is None:
            return tuple(per_layer)
        w = torch.as_tensor(style_weights, dtype=torch.float64) if not isinstance(style_weights, Tensor) \
            else style_weights.double()
        if (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"gen/wct: style weights must be >= 0 with a positive sum, got {w.tolist()}")
        if w.shape[-1] != per_layer[0][0].shape[0]:
            raise ValueError(f"gen/wct: {w.shape[-1]} style weights for {per_layer[0][0].shape[0]} style images")
        w = (w.reshape(1, -1) if w.dim() == 1 else w).to(per_layer[0][0].device)
        w = w / w.sum(-1, keepdim=True)
        return tuple((w @ m, torch.einsum("ns,scd->ncd", w, c)) for m, c in per_layer)

    @torch.no_grad()
    def set_default_style(self, images: Tensor, batch: int = 4) -> None:
        """Keep the mean statistics of `images` (the training style set) as the style used when none is given."""
        chunks = [self.style_stats(x) for x in images.split(batch)]
        for i in range(len(self.cfg.layers)):
            getattr(self, f"default_mean_{i}").copy_(torch.cat([c[i][0] for c in chunks]).mean(0))
            getattr(self, f"default_cov_{i}").copy_(torch.cat([c[i][1] for c in chunks]).mean(0))

    def has_default_style(self) -> bool:
        return bool(self.default_cov_0.abs().sum() > 0)

    # -- forward -----------------------------------------------------------------------------------------------
    def _decode(self, i: int, f: Tensor) -> Tensor:
        s = self.scales[i]
        if self.training and not bool(s > 0):
            with torch.no_grad():
                s.copy_(f.detach().float().pow(2).mean().sqrt().clamp_min(1e-3))
        s = torch.where(s > 0, s, torch.ones_like(s))
        return torch.tanh(self.decoders[i](f / s.to(f.dtype)))

    def forward(self, x: Tensor, style: Tensor | Sequence[Tensor] | None = None, alpha: float | Tensor = 1.0,
                style_weights: Tensor | Sequence[float] | None = None, style_stats: Stats | None = None) -> Tensor:
        if self.training:  # image k is reconstructed from layer k mod L by that layer's decoder alone
            idx, out = [], []
            for i, layer in enumerate(self.cfg.layers[: x.shape[0]]):
                k = torch.arange(i, x.shape[0], len(self.cfg.layers), device=x.device)
                idx.append(k)
                out.append(self._decode(i, self._encode(x[k], layer)))
            return torch.cat(out)[torch.argsort(torch.cat(idx))]
        if style_stats is None:
            if style is not None:
                style_stats = self.style_stats(style, style_weights)
            elif self.has_default_style():
                style_stats = tuple((getattr(self, f"default_mean_{i}")[None],
                                     getattr(self, f"default_cov_{i}")[None]) for i in range(len(self.cfg.layers)))
        y = x
        for i, layer in enumerate(self.cfg.layers):
            f = self._encode(y, layer)
            if style_stats is not None:
                mean, cov = style_stats[i]
                if mean.shape[0] not in (1, f.shape[0]):
                    raise ValueError(f"gen/wct: {mean.shape[0]} style targets for {f.shape[0]} content images; "
                                     f"give 1, {f.shape[0]}, or style_weights to mix them")
                with torch.autocast(f.device.type, enabled=False):
                    t = wct(f.float(), mean, cov, self.cfg.eps)
                    f = alpha * t + (1 - alpha) * f.float() if isinstance(alpha, Tensor) or alpha != 1.0 else t
            y = self._decode(i, f)
        return y


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("gen/wct", WCTGenerator, config=WCTConfig, family="image")
