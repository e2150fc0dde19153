"""DCGAN: a noise-to-image generator and a strided-conv discriminator with a size-aware linear head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.ops.layers import Conv2d, ConvTranspose2d

GEN_SIZES = (32, 64, 128, 256)
DISC_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)


def _log2(n: int) -> int:
    return n.bit_length() - 1


def _widths(n: int, channels: int, cap: int) -> list[int]:
    """Widths of `n` layers, shallowest first: channels, 2*channels, ... capped at max(cap, channels)."""
    top = max(cap, channels)
    return [min(channels * 2**i, top) for i in range(n)]


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv/linear weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------- generator
@dataclass
class DCGANGenConfig:
    size: int = 64  # output side in pixels: 32, 64, 128 or 256
    latent_dim: int = 128  # length of the noise vector z
    channels: int = 64  # width of the last hidden layer; widths double going back towards the noise
    out_channels: int = 3  # RGB
    max_channels: int = 512  # cap on the doubled widths (never below `channels`)

    def __post_init__(self) -> None:
        if self.size not in GEN_SIZES:
            raise ValueError(
                f"size must be one of {', '.join(map(str, GEN_SIZES))} (got {self.size}): "
                "the generator doubles a 4x4 map until it reaches the size"
            )
        for name in ("latent_dim", "channels", "out_channels", "max_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class DCGANGenerator(nn.Module):
    """Noise (N, latent_dim) to an image (N, out_channels, size, size) in [-1, 1].

    A 4x4 transposed conv projects the 1x1 noise map to 4x4; then log2(size) - 2 transposed convs
    (kernel 4, stride 2, padding 1) double the side until `size`: batch norm + ReLU after each hidden
    one, and the last one outputs the RGB channels directly, followed by tanh. With 64 channels and
    size 64 this is the network of Radford et al.: 4x4x512, 8x8x256, 16x16x128, 32x32x64, 64x64x3.

    The original stylezoo design stacked a fixed 4 stride-2 layers on a 1x1 noise map, which yields
    16x16 images whatever size was asked for (a known bug). Here the number of upsampling layers is
    derived from `size`, so the output side always equals `size`.
    """

    family: ClassVar[str] = "noise"

    def __init__(self, cfg: DCGANGenConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.size = cfg.size
        n_hidden = _log2(cfg.size) - 2  # hidden maps at 4, 8, ..., size/2
        widths = _widths(n_hidden, cfg.channels, cfg.max_channels)[::-1]  # deepest first
        layers: list[nn.Module] = [
            ConvTranspose2d(cfg.latent_dim, widths[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        layers += [ConvTranspose2d(widths[-1], cfg.out_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: Tensor, **cond: Any) -> Tensor:
        if x.dim() == 2:
            x = x[:, :, None, None]
        if x.dim() != 4 or x.shape[1] != self.latent_dim or x.shape[2:] != (1, 1):
            raise ValueError(
                f"gen/dcgan expects noise of shape (N, {self.latent_dim}) or (N, {self.latent_dim}, 1, 1), "
                f"got {tuple(x.shape)}"
            )
        return self.net(x)


# ------------------------------------------------------------------------------------------- discriminator
@dataclass
class DCGANDiscConfig:
    size: int = 64  # input side in pixels (a power of two, 8..1024); sizes the linear head
    channels: int = 64  # width of the first conv; widths double at each downsampling
    in_channels: int = 3  # RGB
    spectral_norm: bool = False  # spectral norm on every conv and the head (then no instance norm)
    cond_channels: int = 0  # extra channels of `condition` concatenated to the input (conditional use)
    max_channels: int = 512  # cap on the doubled widths (never below `channels`)

    def __post_init__(self) -> None:
        if self.size not in DISC_SIZES:
            raise ValueError(
                f"size must be a power of two from 8 to 1024 (got {self.size}): the convs halve the image "
                "down to 4x4 before the linear head"
            )
        for name in ("channels", "in_channels", "max_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cond_channels < 0:
            raise ValueError(f"cond_channels must be >= 0, got {self.cond_channels}")


class DCGANDiscriminator(nn.Module):
    """Image (N, in_channels, size, size) to real/fake logits (N,); never applies a sigmoid.

    Conv(4, stride 2, padding 1) layers halve the side down to 4x4: LeakyReLU(0.2) after each, affine
    instance norm after all but the first. The head is a linear layer from the flattened 4x4xC map,
    sized from `size` (no hard-coded feature count).

    With `spectral_norm`, every conv and the head are spectrally normalised and instance norm is left
    out: spectral norm already bounds each layer (as in SN-GAN), and per-sample normalisation on top
    of it only removes information the constrained critic could use.
    """

    per_sample: ClassVar[bool] = True  # instance norm or spectral norm: no statistics across the batch

    def __init__(self, cfg: DCGANDiscConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.size = cfg.size
        self.cond_channels = cfg.cond_channels
        n_down = _log2(cfg.size) - 2
        widths = _widths(n_down, cfg.channels, cfg.max_channels)
        layers: list[nn.Module] = []
        w_prev = cfg.in_channels + cfg.cond_channels
        for i, w in enumerate(widths):
            norm = i > 0 and not cfg.spectral_norm
            layers.append(Conv2d(w_prev, w, 4, 2, 1, bias=not norm))
            if norm:
                layers.append(nn.InstanceNorm2d(w, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            w_prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(w_prev * 4 * 4, 1)
        dcgan_init(self)
        if cfg.spectral_norm:  # wrap after the init so the init sets the raw weights
            for m in [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
                _sn(m)

    def forward(self, image: Tensor, condition: Tensor | None = None, **cond: Any) -> Tensor:
        x = _with_condition(image, condition, self.cond_channels, "disc/dcgan")
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(
                f"disc/dcgan was built for {self.size}x{self.size} images, got {tuple(x.shape[-2:])}; "
                "build it with size set to the training image size"
            )
        return self.head(self.features(x).flatten(1)).squeeze(1)


def _with_condition(image: Tensor, condition: Tensor | None, cond_channels: int, who: str) -> Tensor:
    """Concatenate `condition` to `image` along channels, checking it agrees with `cond_channels`."""
    if cond_channels == 0:
        if condition is not None:
            raise ValueError(f"{who} got a condition but was built with cond_channels=0; set cond_channels")
        return image
    if condition is None:
        raise ValueError(f"{who} was built with cond_channels={cond_channels} but got no condition")
    if condition.shape[1] != cond_channels or condition.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"{who}: condition of shape {tuple(condition.shape)} does not fit image {tuple(image.shape)} "
            f"with cond_channels={cond_channels}"
        )
    return torch.cat([image, condition.to(image.dtype)], dim=1)


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("gen/dcgan", DCGANGenerator, config=DCGANGenConfig, family="noise")
    register("disc/dcgan", DCGANDiscriminator, config=DCGANDiscConfig)
