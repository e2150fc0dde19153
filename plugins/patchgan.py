"""PatchGAN discriminator: a map of logits, one per overlapping image patch (pix2pix, CycleGAN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from stylezoo.core.components.hookspecs import hookimpl


def patch_sides(side: int, n_layers: int) -> list[int]:
    """Side of the map after each conv: n_layers stride-2 convs (k4 p1 halve), then two stride-1 (k4 p1: -1)."""
    sides = []
    for _ in range(n_layers):
        side //= 2
        sides.append(side)
    for _ in range(2):
        side -= 1
        sides.append(side)
    return sides


def min_side(n_layers: int) -> int:
    """Smallest image side that gives a >= 1x1 output and > 1 pixel under every instance norm."""
    side = 1
    while not _fits(side, n_layers):
        side += 1
    return side


def _fits(side: int, n_layers: int) -> bool:
    sides = patch_sides(side, n_layers)
    normed = sides[1:-1]  # all but the first and the output conv are followed by instance norm
    return sides[-1] >= 1 and all(s >= 2 for s in normed)


@dataclass
class PatchConfig:
    channels: int = 64  # width of the first conv; doubles per layer up to 8x (C64-C128-C256-C512)
    n_layers: int = 3  # stride-2 convs; 3 gives 70x70 receptive fields, fewer suits tiny images
    in_channels: int = 3  # RGB
    cond_channels: int = 0  # channels of `condition` concatenated to the input (pix2pix: 3)
    spectral_norm: bool = False  # spectral norm on every conv (then no instance norm)
    size: int = 0  # image side, only used to check it is large enough; 0 = unknown
    num_labels: int = 0  # > 0: projection discriminator over style labels (forward gets label=); set by the engine

    def __post_init__(self) -> None:
        for name in ("channels", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.n_layers <= 6:
            raise ValueError(f"n_layers must be between 1 and 6, got {self.n_layers}")
        if self.cond_channels < 0:
            raise ValueError(f"cond_channels must be >= 0, got {self.cond_channels}")
        if self.size < 0:
            raise ValueError(f"size must be >= 0 (0 = unknown), got {self.size}")
        if self.num_labels < 0:
            raise ValueError(f"num_labels must be >= 0 (0 = unconditional), got {self.num_labels}")
        if self.size and not _fits(self.size, self.n_layers):
            raise ValueError(
                f"{self.size}px images are too small for n_layers={self.n_layers} (needs >= "
                f"{min_side(self.n_layers)}px); lower n_layers or use larger images"
            )


class PatchDiscriminator(nn.Module):
    """Image (N, in_channels, H, W) to a logit map (N, 1, h, w); never applies a sigmoid.

    Conv(4, stride 2) with LeakyReLU(0.2), then n_layers - 1 more stride-2 convs and one stride-1 conv
    with affine instance norm and LeakyReLU, widths C, 2C, 4C, 8C, 8C, ...; a last stride-1 conv gives
    one channel. With the defaults a 32x32 input gives a 2x2 map and 256x256 gives 30x30.

    With `spectral_norm` every conv is spectrally normalised and instance norm is left out (the same
    choice as disc/dcgan: spectral norm already constrains each layer).

    With `num_labels` > 0 it is a projection discriminator (Miyato and Koyama 2018) per patch: the logit
    map gets <embed(label), phi> added, phi being the features under the last conv averaged over each
    patch's 2x2 centre (so the term lines up with the last conv's output). `label` (N,) is then required.
    """

    per_sample: ClassVar[bool] = True  # instance norm or spectral norm: no statistics across the batch

    def __init__(self, cfg: PatchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cond_channels = cfg.cond_channels
        self.min_side = min_side(cfg.n_layers)
        sn = _sn if cfg.spectral_norm else (lambda m: m)
        norm = not cfg.spectral_norm
        c = cfg.channels
        layers: list[nn.Module] = [sn(nn.Conv2d(cfg.in_channels + cfg.cond_channels, c, 4, 2, 1)),
                                   nn.LeakyReLU(0.2, inplace=True)]
        w_prev = c
        for i in range(1, cfg.n_layers + 1):
            w = c * min(2**i, 8)
            stride = 2 if i < cfg.n_layers else 1
            layers.append(sn(nn.Conv2d(w_prev, w, 4, stride, 1, bias=not norm)))
            if norm:
                layers.append(nn.InstanceNorm2d(w, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            w_prev = w
        layers.append(sn(nn.Conv2d(w_prev, 1, 4, 1, 1)))
        self.net = nn.Sequential(*layers)  # the last conv stays in `net` so state-dict keys do not change
        self.num_labels = cfg.num_labels
        self.embed = sn(nn.Embedding(cfg.num_labels, w_prev)) if cfg.num_labels else None
        for m in self.modules():  # pix2pix initialisation; parametrized weights are left to spectral norm
            if isinstance(m, nn.Conv2d) and not cfg.spectral_norm:
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.InstanceNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
        if self.embed is not None and not cfg.spectral_norm:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, image: Tensor, condition: Tensor | None = None, label: Tensor | None = None,
                **cond: Any) -> Tensor:
        if self.cond_channels == 0:
            if condition is not None:
                raise ValueError("disc/patch got a condition but was built with cond_channels=0; set cond_channels")
            x = image
        else:
            if condition is None:
                raise ValueError(f"disc/patch was built with cond_channels={self.cond_channels} but got no condition")
            if condition.shape[1] != self.cond_channels or condition.shape[-2:] != image.shape[-2:]:
                raise ValueError(
                    f"disc/patch: condition of shape {tuple(condition.shape)} does not fit image "
                    f"{tuple(image.shape)} with cond_channels={self.cond_channels}"
                )
            x = torch.cat([image, condition.to(image.dtype)], dim=1)
        if min(x.shape[-2:]) < self.min_side:
            raise ValueError(
                f"disc/patch with n_layers={self.cfg.n_layers} needs images of at least {self.min_side}px, "
                f"got {tuple(x.shape[-2:])}; lower n_layers"
            )
        if self.embed is None:  # unconditional: a label, like any other condition, is ignored
            return self.net(x)
        h = self.net[:-1](x)
        out = self.net[-1](h)
        if label is None:
            raise ValueError(f"disc/patch was built with num_labels={self.num_labels} but got no label")
        e = self.embed(label.to(h.device).long().reshape(-1)).to(h.dtype)
        proj = (h * e[:, :, None, None]).sum(1, keepdim=True)
        return out + F.avg_pool2d(proj, 2, stride=1)


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("disc/patch", PatchDiscriminator, config=PatchConfig)
