"""pix2pix U-Net generator: a strided-conv encoder and a transposed-conv decoder with skip connections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.ops.layers import Conv2d, ConvTranspose2d, Dropout

NORMS = ("instance", "batch")
MAX_DEPTH = 8


def auto_depth(size: int) -> int:
    """Downsamplings for `size`: log2(size) - 1 for powers of two (a 2x2 bottleneck), at most 8.

    For other sizes, as many halvings as keep every level an integer side of at least 2.
    """
    depth = 0
    while depth < MAX_DEPTH and size % 2 ** (depth + 2) == 0:
        depth += 1
    return depth


@dataclass
class UNetConfig:
    size: int = 128  # training image side; sets the depth when depth = 0
    depth: int = 0  # number of downsamplings (1..8); 0 = from size (log2(size) - 1, at most 8)
    channels: int = 64  # width of the first conv; doubles per level up to 8x
    dropout: float = 0.5  # dropout in the innermost decoder layers (pix2pix's noise); 0 disables
    norm: str = "instance"  # "instance" (affine) or "batch"
    in_channels: int = 3  # RGB in
    out_channels: int = 3  # RGB out

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}, got {self.norm!r}")
        if not 0 <= self.depth <= MAX_DEPTH:
            raise ValueError(f"depth must be between 1 and {MAX_DEPTH}, or 0 for automatic, got {self.depth}")
        if self.depth == 0 and auto_depth(self.size) < 1:
            raise ValueError(f"size {self.size} cannot set the depth: use a multiple of 4 (e.g. 128) or set depth")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("channels", "in_channels", "out_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def levels(self) -> int:
        return self.depth or auto_depth(self.size)


class UNetGenerator(nn.Module):
    """Image (N, in_channels, H, W) to image (N, out_channels, H, W) in [-1, 1]; H, W multiples of 2**depth.

    Encoder: Conv(4, stride 2) per level, widths C, 2C, 4C, 8C, 8C, ...; LeakyReLU(0.2) before each
    conv but the first, norm after each but the first and the innermost. Decoder: ReLU, ConvTranspose
    (4, stride 2), norm, concatenation with the mirrored encoder level; the outermost one maps to RGB
    and tanh. As in pix2pix, the up to three decoder layers just outside the innermost one use dropout
    (active in train mode only).
    """

    family: ClassVar[str] = "image"

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        depth = cfg.levels
        self.depth = depth
        self.size_multiple = 2**depth
        widths = [cfg.channels * min(2**i, 8) for i in range(depth)]
        batch = cfg.norm == "batch"

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if batch else nn.InstanceNorm2d(c, affine=True)

        self.down = nn.ModuleList([Conv2d(cfg.in_channels, widths[0], 4, 2, 1)])
        for i in range(1, depth):
            inner = i == depth - 1
            layers: list[nn.Module] = [nn.LeakyReLU(0.2), Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=inner)]
            if not inner:
                layers.append(norm(widths[i]))
            self.down.append(nn.Sequential(*layers))
        # up[j] turns level j+1 (or the innermost level) back into level j's side; up[0] is outermost
        self.up = nn.ModuleList()
        for j in range(depth):
            c_in = widths[j] if j == depth - 1 else 2 * widths[j]  # all but the innermost see a skip concat
            if j == 0:
                self.up.append(nn.Sequential(nn.ReLU(), ConvTranspose2d(c_in, cfg.out_channels, 4, 2, 1), nn.Tanh()))
                continue
            layers = [nn.ReLU(), ConvTranspose2d(c_in, widths[j - 1], 4, 2, 1, bias=False), norm(widths[j - 1])]
            if cfg.dropout > 0 and depth - 4 <= j <= depth - 2:
                layers.append(Dropout(cfg.dropout))
            self.up.append(nn.Sequential(*layers))
        for m in self.modules():  # pix2pix initialisation
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, **cond: Any) -> Tensor:
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            h, w = x.shape[-2:]
            if h % self.size_multiple or w % self.size_multiple:
                raise ValueError(
                    f"gen/unet with depth {self.depth} needs sides that are multiples of {self.size_multiple}, "
                    f"got {h}x{w}; pad the image (stylize does) or lower depth"
                )
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = skips.pop()
        for up in reversed(self.up[1:]):
            x = torch.cat([up(x), skips.pop()], dim=1)
        return self.up[0](x)


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("gen/unet", UNetGenerator, config=UNetConfig, family="image")
