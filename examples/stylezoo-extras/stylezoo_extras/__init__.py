"""stylezoo-extras: an example third-party plugin for stylezoo.

It adds `gen/pixelshuffle` (an image-to-image generator that upsamples with sub-pixel convolution) and
`loss/laplacian` (edge preservation: the output's Laplacian should match the content image's). stylezoo
finds it through the entry point `[project.entry-points.stylezoo] extras = "stylezoo_extras"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Only the public plugin API, `import stylezoo` (docs/plugins.md). `pluggy.HookimplMarker("stylezoo")` is the
# same marker as stylezoo.hookimpl, for a plugin that must not import stylezoo at import time.
import stylezoo
from stylezoo import StepContext

__version__ = "0.1.0"


# ---------------------------------------------------------------------------------------- generator
@dataclass
class PixelShuffleConfig:
    channels: int = 32  # width of the first layer; doubles at each downsampling
    downsample: int = 2  # strided convs; input sides must be multiples of 2**downsample
    blocks: int = 4  # residual blocks at the bottleneck

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if not 0 <= self.downsample <= 5:
            raise ValueError(f"downsample must be in 0..5, got {self.downsample}")
        if self.blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {self.blocks}")


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode="reflect"), nn.InstanceNorm2d(ch, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode="reflect"), nn.InstanceNorm2d(ch, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PixelShuffleGenerator(nn.Module):
    """Image to image: strided-conv encoder, residual blocks, sub-pixel (PixelShuffle) decoder, tanh.

    Sub-pixel upsampling avoids the checkerboard artefacts of transposed convolutions.
    """

    family: ClassVar[str] = "image"

    def __init__(self, cfg: PixelShuffleConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.size_multiple = 2 ** cfg.downsample
        ch = cfg.channels
        layers: list[nn.Module] = [
            nn.Conv2d(3, ch, 7, padding=3, padding_mode="reflect"), nn.InstanceNorm2d(ch, affine=True),
            nn.ReLU(inplace=True),
        ]
        for _ in range(cfg.downsample):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2, affine=True),
                       nn.ReLU(inplace=True)]
            ch *= 2
        layers += [_Residual(ch) for _ in range(cfg.blocks)]
        for _ in range(cfg.downsample):
            # ch -> 4 * (ch // 2) channels, then PixelShuffle(2) trades them for 2x the resolution
            layers += [nn.Conv2d(ch, (ch // 2) * 4, 3, padding=1), nn.PixelShuffle(2),
                       nn.InstanceNorm2d(ch // 2, affine=True), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.Conv2d(ch, 3, 7, padding=3, padding_mode="reflect"), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, **cond: object) -> Tensor:
        m = self.size_multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"gen/pixelshuffle needs image sides that are multiples of {m}, got {tuple(x.shape[-2:])}")
        return self.net(x)


# ---------------------------------------------------------------------------------------- loss term
@dataclass
class LaplacianConfig(stylezoo.LossConfig):  # gives `weight: float = 1.0`, checked >= 0
    scales: int = 2  # also compare at 1/2, 1/4, ... resolution (coarser edges)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.scales <= 6:
            raise ValueError(f"scales must be in 1..6, got {self.scales}")


class LaplacianLoss(stylezoo.Loss):
    """Edge preservation: mean squared difference of the luminance Laplacians of output and content.

    Sum over `scales` resolutions (each half the previous, by 2x2 average pooling). Needs the content
    image that produced each output (image-to-image generators).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"content"})  # a generator-side term (Loss's `step`)

    def __init__(self, cfg: LaplacianConfig) -> None:
        super().__init__(cfg)
        kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
        self.register_buffer("kernel", kernel, persistent=False)
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)

    def _edges(self, x: Tensor) -> Tensor:
        y = (x.float() * self.luma).sum(1, keepdim=True)
        return F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), self.kernel)

    def forward(self, ctx: StepContext) -> Tensor:
        if ctx.content is None:
            raise RuntimeError("loss/laplacian needs content images (an image-to-image generator)")
        fake, content = ctx.fake, ctx.content.to(ctx.fake.dtype)
        total = fake.new_zeros((), dtype=torch.float32)
        for s in range(self.cfg.scales):
            if s:
                if min(fake.shape[-2:]) < 2:
                    break
                fake, content = F.avg_pool2d(fake, 2), F.avg_pool2d(content, 2)
            total = total + F.mse_loss(self._edges(fake), self._edges(content))
        return total


# ---------------------------------------------------------------------------------------- the hook
@stylezoo.hookimpl
def register_components(register: stylezoo.Register) -> None:
    register(
        "gen/pixelshuffle", PixelShuffleGenerator, config=PixelShuffleConfig,
        description="Image-to-image generator with sub-pixel (PixelShuffle) upsampling",
        paper="Shi et al. 2016, Real-Time Single Image and Video Super-Resolution (arXiv:1609.05158)",
        licence="Apache-2.0", family="image",
    )
    register(
        "loss/laplacian", LaplacianLoss, config=LaplacianConfig,
        description="Edge preservation: MSE between luminance Laplacians of output and content, multi-scale",
        licence="Apache-2.0",
    )
